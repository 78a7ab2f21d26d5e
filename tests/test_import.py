"""`import agnostic_cam` needs neither torch, tensorflow nor matplotlib."""
import subprocess
import sys

CODE_CLEAN = """
import sys, agnostic_cam
heavy = [m for m in ("torch", "tensorflow", "keras", "matplotlib", "onnx2torch") if m in sys.modules]
print(heavy)
sys.exit(1 if heavy else 0)
"""

CODE_NO_TORCH = """
import sys
sys.modules["torch"] = None          # simulate an environment without torch
sys.modules["tensorflow"] = None
import agnostic_cam
try:
    agnostic_cam.Explainer.from_torch(object(), "layer4")
except ImportError as e:
    assert "pip install 'agnostic-cam[torch]'" in str(e), e
    print("ok")
else:
    raise SystemExit("no ImportError")
"""


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_is_light():
    r = run(CODE_CLEAN)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_without_frameworks_and_clear_error():
    r = run(CODE_NO_TORCH)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
