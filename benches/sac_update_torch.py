"""Times the SAC update of CleanRL's sac_continuous_action.py in PyTorch, for comparison
with `cargo bench --bench sac_update`: same sizes (batch 256, 256-256 MLPs), same step
order (twin-Q step; every 2nd update 2 actor steps each followed by a temperature step
that reads alpha back with .item(); Polyak targets every update). Written for volley,
not copied from CleanRL. Batches are pre-generated tensors (no replay sampling).

    python benches/sac_update_torch.py [--seconds S] [--threads T] [--device cpu|cuda]
"""

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Q(nn.Module):
    def __init__(self, obs, act):
        super().__init__()
        self.fc1 = nn.Linear(obs + act, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 1)

    def forward(self, x, a):
        x = F.relu(self.fc1(torch.cat([x, a], 1)))
        return self.fc3(F.relu(self.fc2(x)))


class Actor(nn.Module):
    def __init__(self, obs, act):
        super().__init__()
        self.fc1 = nn.Linear(obs, 256)
        self.fc2 = nn.Linear(256, 256)
        self.mean = nn.Linear(256, act)
        self.logstd = nn.Linear(256, act)

    def sample(self, x):
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        mean = self.mean(x)
        log_std = torch.tanh(self.logstd(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        normal = torch.distributions.Normal(mean, log_std.exp())
        u = normal.rsample()
        y = torch.tanh(u)
        logp = normal.log_prob(u) - torch.log(1 - y.pow(2) + 1e-6)
        return y, logp.sum(1, keepdim=True)


def bench(obs_dim, act_dim, device, seconds):
    torch.manual_seed(0)
    actor = Actor(obs_dim, act_dim).to(device)
    q1, q2 = Q(obs_dim, act_dim).to(device), Q(obs_dim, act_dim).to(device)
    q1t, q2t = Q(obs_dim, act_dim).to(device), Q(obs_dim, act_dim).to(device)
    q1t.load_state_dict(q1.state_dict())
    q2t.load_state_dict(q2.state_dict())
    q_opt = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=1e-3)
    a_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    log_alpha = torch.zeros(1, requires_grad=True, device=device)
    al_opt = torch.optim.Adam([log_alpha], lr=1e-3)
    alpha, target_entropy, gamma, tau = log_alpha.exp().item(), -act_dim, 0.99, 0.005
    b = 256
    obs = torch.randn(b, obs_dim, device=device)
    act = torch.rand(b, act_dim, device=device) * 2 - 1
    rew = torch.randn(b, device=device)
    nobs = torch.randn(b, obs_dim, device=device)
    done = (torch.rand(b, device=device) < 0.01).float()

    def update(step):
        nonlocal alpha
        with torch.no_grad():
            na, nlogp = actor.sample(nobs)
            mq = torch.min(q1t(nobs, na), q2t(nobs, na)) - alpha * nlogp
            y = rew + (1 - done) * gamma * mq.view(-1)
        l1 = F.mse_loss(q1(obs, act).view(-1), y)
        l2 = F.mse_loss(q2(obs, act).view(-1), y)
        q_opt.zero_grad()
        (l1 + l2).backward()
        q_opt.step()
        if step % 2 == 0:
            for _ in range(2):
                pi, logp = actor.sample(obs)
                loss = (alpha * logp - torch.min(q1(obs, pi), q2(obs, pi))).mean()
                a_opt.zero_grad()
                loss.backward()
                a_opt.step()
                with torch.no_grad():
                    _, logp = actor.sample(obs)
                al = (-log_alpha.exp() * (logp + target_entropy)).mean()
                al_opt.zero_grad()
                al.backward()
                al_opt.step()
                alpha = log_alpha.exp().item()
        for net, tgt in ((q1, q1t), (q2, q2t)):
            for p, tp in zip(net.parameters(), tgt.parameters()):
                tp.data.copy_(tau * p.data + (1 - tau) * tp.data)

    step = 0
    for _ in range(10):
        update(step)
        step += 1
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < seconds:
        for _ in range(10):
            update(step)
            step += 1
        n += 10
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}")
    print("| inputs | updates/s |")
    print("|---|---:|")
    for name, o, k in (("hopper-sized: 11-d obs, 3-d actions", 11, 3),
                       ("ant-sized: 105-d obs, 8-d actions", 105, 8)):
        r = bench(o, k, a.device, a.seconds)
        print(f"| {name} | {r:.0f} |")


if __name__ == "__main__":
    main()
