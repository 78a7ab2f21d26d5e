"""The README's Python examples run as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    for i, code in enumerate(blocks):
        exec(compile(code, f"README block {i}", "exec"), {"__name__": f"readme_{i}"})
    assert (tmp_path / "gradcam.png").stat().st_size > 1000
