"""An Engram layer dropped into a plain PyTorch loop: digits (8 steps x 8 values), 3 epochs.

Run: python examples/quickstart.py   (a few seconds on a CPU, no download; the digits come
from scikit-learn, which the `train` extra installs)
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

from enn import Engram


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = Engram(8, 64, batch_first=True, memory_size=32)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        out, _ = self.rnn(x)  # (B, T, 64)
        return self.head(out[:, -1])


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)  # (1797, 8, 8)
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x))
    train, test = perm[:1500], perm[1500:]
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(3):
        model.train()
        for idx in train[torch.randperm(len(train))].split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[test]).argmax(-1) == y[test]).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}  test accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
