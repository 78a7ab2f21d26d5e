"""Another package's hook on PIL.Image.open must not turn an unreadable image into a crash.

ultralytics (which users of YOLO models have imported) replaces ``PIL.Image.open`` when imported; on a
file Pillow cannot identify, its hook imports ``pi_heif`` and raises ModuleNotFoundError where that is
not installed. Run in a subprocess, so the hook stays out of this test process.
"""
import subprocess
import sys
import textwrap


def test_unreadable_image_is_an_input_error_with_ultralytics_imported(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    code = textwrap.dedent(f"""
        import os, tempfile
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp()
        import PIL.Image
        before = PIL.Image.open
        import ultralytics  # noqa: F401
        assert PIL.Image.open is not before, "ultralytics no longer patches PIL.Image.open: drop this test"
        from agnostic_cam.errors import InputError
        from agnostic_cam.inputs.image_files import read_image
        try:
            read_image({str(bad)!r})
        except InputError as e:
            print("INPUT ERROR:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "INPUT ERROR: cannot read image" in r.stdout and "bad.png" in r.stdout, r.stdout
