import pytest
import torch
from hypothesis import given, settings, strategies as st

from rnnpool.deploy import RNNPoolStream, measure_streaming, stream_rnnpool, stream_working_memory
from rnnpool.nn import RNNPool2d


@settings(max_examples=25, deadline=None)
@given(
    patch=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    stride=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    size=st.tuples(st.integers(6, 20), st.integers(6, 20)),
    band=st.integers(1, 7),
    cell=st.sampled_from(["fastgrnn", "gru", "lstm"]),
    seed=st.integers(0, 1000),
)
def test_stream_equals_batched(patch, stride, padding, size, band, cell, seed):
    torch.manual_seed(seed)
    layer = RNNPool2d(3, patch, stride, 4, 3, padding=padding, cell=cell).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(stream_rnnpool(layer, x, band), layer(x), rtol=0, atol=1e-6)


def test_stream_holds_only_a_strip():
    layer = RNNPool2d(4, 8, 4, 8, 8).eval()
    stream = RNNPoolStream(layer, 240, 320)
    x = torch.randn(1, 4, 240, 320)
    with torch.no_grad():
        rows = [stream.push(x[:, :, i : i + 8]) for i in range(0, 240, 8)]
        rows.append(stream.finish())
    assert sum(r.shape[2] for r in rows) == 59 and rows[0].shape[2] == 1  # output rows leave as soon as ready
    assert stream.max_buffer_rows <= 8 + 8  # one patch height + one band, never the whole map


def test_face_quant_working_memory_measured():
    """RNNPool-Face-Quant's RNNPool on its 320x240x4 map (the stem's output), fed 8 rows at a time."""
    torch.manual_seed(0)
    layer = RNNPool2d(4, 8, 4, 8, 8).eval()
    x = torch.randn(1, 4, 240, 320)
    need = stream_working_memory(layer, 320, 240, band_rows=8, elem_bytes=4)
    assert need["output"] == 59 * 79 * 32 * 4 and need["rows"] == 16 * 320 * 4 * 4
    measured = measure_streaming(layer, x, band_rows=8)
    # the runner allocates the output (twice at the end: row list + concatenation) and per-strip temporaries
    assert measured["stream_peak"] < 3 * need["total"]
    # the batched layer holds the whole projected map (2.4 MB here) and more: 4.4 MB since its inference path
    # writes RNN1's summaries through W2 and RNN2's states into the output directly (it was over 6 MB before)
    assert measured["stream_peak"] * 3 < measured["batched_peak"]


def test_stream_errors():
    layer = RNNPool2d(3, 4, 2, 2, 2)
    stream = RNNPoolStream(layer, 10, 8)
    with pytest.raises(ValueError, match=r"expected a band \(N, 3, k, 8\)"):
        stream.push(torch.zeros(1, 3, 2, 9))
    stream.push(torch.zeros(1, 3, 6, 8))
    with pytest.raises(ValueError, match="got 6 of 10 rows"):
        stream.finish()
    with pytest.raises(ValueError, match="pushed 12 rows into a stream of height 10"):
        stream.push(torch.zeros(1, 3, 6, 8))
    with pytest.raises(ValueError, match="smaller than the patch"):
        RNNPoolStream(layer, 3, 8)
    with pytest.raises(ValueError, match="band_rows must be positive"):
        stream_rnnpool(layer, torch.zeros(1, 3, 8, 8), 0)
