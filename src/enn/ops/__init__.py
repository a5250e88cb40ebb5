"""Pure functional ops (no nn.Module state)."""
