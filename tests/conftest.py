import pytest
import torch

from metalr.learned.network import ScheduleNet


@pytest.fixture(autouse=True)
def _single_thread():
    # The models under test are tiny; one thread is faster and makes timings stable.
    torch.set_num_threads(1)


@pytest.fixture
def raising_net():
    """``raising_net(config, seed=0)``: a schedule network that asks for the most it may have
    (its head's bias far positive), for the limits on its output (the cap, the ratio ceilings,
    the lock) to bind."""
    def make(config, seed: int = 0) -> ScheduleNet:
        torch.manual_seed(seed)
        net = ScheduleNet(config)
        with torch.no_grad():
            net.head.bias.fill_(8.0)
        return net

    return make
