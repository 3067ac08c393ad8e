"""The pack's one σ → sampling-step lookup (base/sigma_steps.py), which P2P's windows, local
blend, Apply Inversion and the embedding-VAE patch all read their step from."""

from __future__ import annotations

import threading

import torch

from comfyui_prompt_edit.base.sigma_steps import StepCache, sigma_after, step_at

SCHEDULE = torch.tensor([14.6, 4.0, 1.5, 0.3, 0.0])


def test_each_listed_sigma_is_its_own_step_and_the_last_sigma_counts_as_the_last_step():
    assert [step_at(float(s), SCHEDULE) for s in SCHEDULE] == [0, 1, 2, 3, 3]


def test_a_sigma_rounded_on_its_way_finds_its_step():
    for k, s in enumerate(SCHEDULE[:-1].tolist()):
        assert step_at(s * (1 + 3e-5), SCHEDULE) == k and step_at(s * (1 - 3e-5), SCHEDULE) == k
    assert [step_at(float(s), SCHEDULE.double()) for s in SCHEDULE[:-1]] == [0, 1, 2, 3]  # fp32 σ, fp64 list


def test_a_sigma_between_two_listed_ones_is_the_later_step_and_lands_on_the_next_listed_sigma():
    assert step_at(2.0, SCHEDULE) == 2 and sigma_after(2.0, SCHEDULE) == SCHEDULE[2].item()
    assert [sigma_after(float(s), SCHEDULE) for s in SCHEDULE] == SCHEDULE[1:].tolist() + [0.0]


def test_the_cache_answers_by_the_sigma_tensor_and_is_read_once_per_call_from_threads():
    cache, steps = StepCache(), []
    calls = [SCHEDULE[k : k + 1].clone() for k in range(4)]
    threads = [threading.Thread(target=lambda k=k: steps.append((k, cache.step(calls[k], SCHEDULE)))) for k in range(4)
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(steps)) == [(k, k) for k in range(4)] and len(steps) == 32
    other = torch.tensor([10.0, 1.0, 0.0])  # a new run's schedule: the same σ tensor is looked up again
    assert cache.step(calls[1], SCHEDULE) == 1 and cache.step(torch.tensor([1.0]), other) == 1
    cache.reset()
    assert cache.step(calls[3], SCHEDULE) == 3
