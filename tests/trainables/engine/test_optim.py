"""Our Adam follows torch.optim.Adam bit for bit, alone and stacked, and keeps torch._dynamo out."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from trainables.engine.optim import Adam
from trainables.model import MLP


@pytest.mark.parametrize("lr", [1e-3, 1e-2, 3e-4])
def test_training_an_mlp_matches_torch_adam_bit_for_bit(lr):
    torch.manual_seed(0)
    ours_model = MLP()
    torch_model = MLP()
    torch_model.load_state_dict(ours_model.state_dict())
    ours, reference = Adam(list(ours_model.parameters()), lr), torch.optim.Adam(torch_model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y = torch.randn(64, 784, generator=generator), torch.randint(0, 10, (64,), generator=generator)
        for model, optimizer in ((ours_model, ours), (torch_model, reference)):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    for mine, theirs in zip(ours_model.parameters(), torch_model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_tensor_without_gradient_is_left_alone_as_torch_does():
    weights = torch.tensor([1.0, -2.0, 3.0])
    ours = [torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)]
    theirs = [torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)]
    for (_, trained), optimizer in ((ours, Adam(ours, 0.1)), (theirs, torch.optim.Adam(theirs, lr=0.1))):
        (trained * weights).sum().backward()
        optimizer.step()
    assert torch.equal(ours[0], torch.ones(3))
    assert torch.equal(ours[1], theirs[1]) and not torch.equal(ours[1], torch.ones(3))


def test_it_needs_a_learning_rate():
    with pytest.raises(ValueError, match="learning rate"):
        Adam([torch.ones(1)], [])


def test_stacked_members_each_follow_their_own_torch_adam():
    generator = torch.Generator().manual_seed(0)
    lrs = [1e-2, 1e-3, 5e-2]
    start = torch.randn(3, 4, 5, generator=generator)
    stacked = start.clone().requires_grad_(True)
    alone = [start[k].clone().requires_grad_(True) for k in range(3)]
    optimisers = [torch.optim.Adam([p], lr=lr) for p, lr in zip(alone, lrs, strict=True)]
    ours = Adam([stacked], lrs)
    for _ in range(20):
        target = torch.randn(3, 4, 5, generator=generator)
        ours.zero_grad()
        ((stacked - target) ** 3).sum().backward()
        ours.step()
        for k, (p, opt) in enumerate(zip(alone, optimisers, strict=True)):
            opt.zero_grad()
            ((p - target[k]) ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([p.detach() for p in alone]), atol=0, rtol=0)


def test_training_a_trial_does_not_import_torch_dynamo():
    # torch.optim imports torch._dynamo on first use: 1.6 s for every fresh Ray worker
    code = (
        "import sys\n"
        "from trainables.engine.trial import run_trial\n"
        "run_trial({'method': 'taugate', 'epochs': 1, 'foundation_epochs': 1})\n"
        "print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
