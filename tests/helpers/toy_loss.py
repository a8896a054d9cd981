"""A toy preference loss, registered as a user would add one: this file and its one @register line."""

from eg3d_rlhf.finetune import losses


@losses.register('toy-square', 'test: (1 - margin)^2 of the implicit rewards (a least-squares DPO)')
def toy_square(batch, options):
    r_chosen, r_rejected, logits = losses.implicit_rewards(batch, options)
    return (1 - logits) ** 2, losses.dpo_stats(r_chosen, r_rejected)
