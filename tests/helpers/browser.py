"""Headless Chromium under Selenium for the tests that drive the labeling pages in a real browser."""

import shutil

import pytest

#----------------------------------------------------------------------------

def chromium_driver(extra_args=()):
    """Headless Chromium under Selenium; skip, saying what is missing, when it cannot run here. `extra_args` are more
    Chromium switches (e.g. '--disable-webgl')."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip('selenium is not installed (pip install -e ".[test]")')
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    driver_path = shutil.which('chromedriver')
    if browser is None or driver_path is None:
        pytest.skip('chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver)')
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1400,700',
            *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)

#----------------------------------------------------------------------------
