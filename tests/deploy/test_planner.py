import pytest
from hypothesis import given, settings, strategies as st

from rnnpool.deploy.planner import Buffer, check_plan, layer_by_layer_peak, peak_step, plan_arena


@st.composite
def buffer_sets(draw):
    count = draw(st.integers(1, 12))
    buffers = []
    for i in range(count):
        first = draw(st.integers(0, 8))
        buffers.append(Buffer(f"b{i}", draw(st.integers(1, 5000)), first, first + draw(st.integers(0, 4))))
    return buffers


@given(buffer_sets())
@settings(max_examples=150, deadline=None)
def test_live_buffers_never_share_bytes(buffers):
    arena = plan_arena(buffers)
    check_plan(buffers)
    assert all(b.offset % 8 == 0 and b.offset + b.size <= arena for b in buffers)
    # the arena is never larger than giving every buffer its own bytes
    assert arena <= sum((b.size + 7) // 8 * 8 for b in buffers)


def test_freed_buffers_are_reused_and_in_place_keeps_its_input_alive():
    a, b, c = Buffer("a", 100, 0, 1), Buffer("b", 100, 1, 2), Buffer("c", 100, 2, 3)
    assert plan_arena([a, b, c]) == 208 and a.offset == c.offset
    # d is computed in place over b: b's bytes stay busy until d dies, so e cannot take them
    b, d, e = Buffer("b", 100, 0, 1), Buffer("d", 100, 1, 3, alias="b"), Buffer("e", 100, 2, 3)
    plan_arena([b, d, e])
    assert d.offset == b.offset and e.offset != b.offset
    with pytest.raises(ValueError, match="larger"):
        plan_arena([Buffer("x", 10, 0, 1), Buffer("y", 20, 1, 2, alias="x")])


def test_peaks_name_their_tensors():
    step, names = peak_step([Buffer("a", 100, 0, 1), Buffer("b", 300, 1, 1), Buffer("c", 50, 2, 2)])
    assert step == 1 and names == ["b", "a"]
    layers = [("conv1", ["image"], "t1"), ("conv2", ["t1"], "t2"), ("add", ["t1", "t2"], "t3")]
    peak, layer, tensors = layer_by_layer_peak(layers, {"image": 1000, "t1": 400, "t2": 400, "t3": 400})
    assert (peak, layer, tensors) == (1400, "conv1", ["image", "t1"])
