"""Fixtures for the grammar tests (single-threaded torch: the CPU is shared)."""

import torch

torch.set_num_threads(1)
