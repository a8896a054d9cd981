"""Preference data: judgements, sample banks (writer and reader), simulated annotators, labeling sessions."""
