"""The planner: will a model fit, how long will it take, what should I buy.

- :mod:`lmdev.plan.memory`: bytes per device, part by part (:func:`estimate_memory`).
- :mod:`lmdev.plan.compute`: FLOPs per token, tokens/s at an MFU, time for a budget.
- :mod:`lmdev.plan.advisor`: fits, largest batch/sequence, ranked recommendations, hardware
  comparison (:func:`make_plan`).
- :mod:`lmdev.plan.hardware`: catalog GPUs or this machine.
- :mod:`lmdev.plan.model_input`: what ``lmdev plan MODEL`` accepts.
- :mod:`lmdev.plan.measure` / :mod:`lmdev.plan.worker`: real steps in a clean process, calibration.

Nothing here imports torch; only the measurement worker does, in its own process.
"""
