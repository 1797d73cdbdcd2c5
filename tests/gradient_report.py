"""Print the largest relative gradient error of every op over 100 random draws, and of a
few small models: the numbers in docs/testing.md. Run: python tests/gradient_report.py"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from hypothesis import given, settings, HealthCheck, strategies as st
from test_gradients import OPS, check_op
from helpers import small_net, batch
from minicaps.gradcheck import check_model, directional_check
worst = {}
for name, (draw, fwd, bwd, wrt) in sorted(OPS.items()):
    worst[name] = 0.0
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def run(data):
        inputs, kwargs = draw(data)
        worst[name] = max(worst[name], max(check_op(fwd, bwd, inputs, kwargs=kwargs, wrt=wrt)))
    run()
    print(f"{name:22s} max rel error over 100 draws: {worst[name]:.1e}")
for kw in [{}, {"routing_grad": "full", "reconstruction": False}, {"in_shape": (3, 11, 13)}, {"share_transforms": True}]:
    net = small_net(**kw); x, y = batch(net)
    s = check_model(net, x, y, max_entries=10); d = directional_check(net, x, y)
    print(kw, "sampled entries max %.1e" % max(s.values()), "directional max %.1e" % max(d.values()))
    print("   ", {k: "%.0e" % v for k, v in s.items()})
