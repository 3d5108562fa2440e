import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # The models under test are tiny; one thread is faster and makes timings stable.
    torch.set_num_threads(1)
