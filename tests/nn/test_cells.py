import pytest
import torch

from rnnpool.nn import FastGRNNCell, GRUCell, LSTMCell, create_cell, quant_sigmoid, quant_tanh


def test_gru_matches_torch_grucell():
    torch.manual_seed(0)
    ours, theirs = GRUCell(5, 7).double(), torch.nn.GRUCell(5, 7).double()
    theirs.load_state_dict(ours.state_dict())
    x, h = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x, h), theirs(x, h), rtol=0, atol=1e-12)


def test_lstm_matches_torch_lstmcell():
    torch.manual_seed(0)
    ours, theirs = LSTMCell(5, 7).double(), torch.nn.LSTMCell(5, 7).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 5, dtype=torch.float64)
    h, c = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    new = ours(x, torch.cat((h, c), 1))
    h_ref, c_ref = theirs(x, (h, c))
    torch.testing.assert_close(new, torch.cat((h_ref, c_ref), 1), rtol=0, atol=1e-12)
    assert ours.hidden(new).shape == (4, 7)


@pytest.mark.parametrize("w_rank,u_rank", [(None, None), (3, 2)])
@pytest.mark.parametrize("gate", ["sigmoid", "quant_sigmoid"])
@pytest.mark.parametrize("update", ["tanh", "quant_tanh"])
@pytest.mark.parametrize("hidden,batch", [(4, 3), (4, 8), (16, 3)])  # U padded, U packed for 4 states a row, plain
def test_fastgrnn_equations(w_rank, u_rank, gate, update, hidden, batch):
    """Every gate x update pair against the direct formula, with zeta and nu away from their pinned values
    (a wrong sign of zeta + nu or a doubled bias would show)."""
    torch.manual_seed(1)
    cell = FastGRNNCell(6, hidden, gate, update, w_rank=w_rank, u_rank=u_rank, zeta_init=0.5, nu_init=-1.0).double()
    with torch.no_grad():
        cell.bias_update.normal_()
    x, h = torch.randn(batch, 6, dtype=torch.float64), torch.randn(batch, hidden, dtype=torch.float64)
    w = cell.w1 if w_rank is None else cell.w1 @ cell.w2
    u = cell.u1 if u_rank is None else cell.u1 @ cell.u2
    pre = x @ w.T + h @ u.T
    sig = torch.sigmoid if gate == "sigmoid" else (lambda v: ((v + 1) / 2).clamp(0, 1))
    tanh = torch.tanh if update == "tanh" else (lambda v: v.clamp(-1, 1))
    z, cand = sig(pre + cell.bias_gate), tanh(pre + cell.bias_update)
    zeta, nu = torch.sigmoid(torch.tensor(0.5, dtype=torch.float64)), torch.sigmoid(torch.tensor(-1.0, dtype=torch.float64))
    expected = (zeta * (1 - z) + nu) * cand + z * h
    torch.testing.assert_close(cell(x, h), expected, rtol=0, atol=1e-12)


def test_fastgrnn_defaults_follow_the_paper():
    cell = FastGRNNCell(3, 8)
    assert torch.sigmoid(cell.zeta).item() == pytest.approx(1.0)
    assert torch.sigmoid(cell.nu).item() == pytest.approx(0.0, abs=1e-30)
    assert not cell.zeta.requires_grad and not cell.nu.requires_grad
    assert torch.equal(cell.bias_gate, torch.ones(8)) and torch.equal(cell.bias_update, torch.ones(8))
    assert FastGRNNCell(3, 8, train_zeta_nu=True).zeta.requires_grad


def test_madds_per_step():
    assert FastGRNNCell(10, 4).madds_per_step() == 4 * 10 + 4 * 4
    assert FastGRNNCell(10, 4, w_rank=2, u_rank=1).madds_per_step() == 2 * (10 + 4) + 1 * 8
    assert GRUCell(10, 4).madds_per_step() == 3 * 4 * 14
    assert LSTMCell(10, 4).madds_per_step() == 4 * 4 * 14


def test_quant_nonlinearities():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    assert quant_sigmoid(x).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    assert quant_tanh(x).tolist() == [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0]


def test_bad_cell_options():
    with pytest.raises(ValueError, match="unknown cell 'grnn'.*did you mean"):
        create_cell("grnn", 3, 4)
    with pytest.raises(ValueError, match="unknown nonlinearity 'softsign'"):
        create_cell("fastgrnn", 3, 4, gate_nonlinearity="softsign")
    with pytest.raises(TypeError, match="bad options for cell 'gru'"):
        create_cell("gru", 3, 4, w_rank=2)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        FastGRNNCell(3, 0)
    with pytest.raises(ValueError, match="w_rank"):
        FastGRNNCell(3, 4, w_rank=-1)
