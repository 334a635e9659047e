"""The window on a real X server (Xvfb, Qt's xcb platform), and the terminal when it cannot open.

Unlike the other GUI tests (offscreen platform), these start ``bci-app gui`` as a user does, in
its own process with ``QT_QPA_PLATFORM=xcb``: the system libraries of Qt's xcb plugin must load
and the window must reach the X server. Where they cannot, the app prints the apt line that fixes
it and plays the same session in the terminal (``bci-app run``) instead of Qt's abort.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gui.qt_platform import XCB_PACKAGES, missing_libraries, plugin_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb platform is Linux"),
]

# Grabs the X server's root window (what the display shows, from another process than the app)
# until the window covers most of the screen and over 1% of it differs between two grabs half a
# second apart: the scope draws live traces (a label or a cursor changes far fewer pixels).
_GRABBER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from PyQt6.QtGui import QGuiApplication, QImage

    app = QGuiApplication(sys.argv[:1])
    screen = app.primaryScreen()
    deadline = time.monotonic() + float(sys.argv[2])
    previous, result = None, {"covered": 0.0, "changed": 0.0}
    while True:
        image = screen.grabWindow(0).toImage().convertToFormat(QImage.Format.Format_RGB32)
        bits = image.constBits()
        bits.setsize(image.sizeInBytes())
        pixels = np.frombuffer(bits, np.uint8).reshape(image.height(), -1, 4)
        pixels = pixels[:, : image.width(), :3].copy()
        covered = float((pixels.max(axis=2) > 0).mean())  # Xvfb -br: black where no window
        changed = 0.0 if previous is None else float((pixels != previous).any(axis=2).mean())
        result = {"covered": covered, "changed": changed}
        if (covered > 0.5 and changed > 0.01) or time.monotonic() > deadline:
            break
        previous = pixels if covered > 0.5 else None
        time.sleep(0.5)
    image.save(sys.argv[1])
    print(json.dumps(result))
    """
)


def _qt_env(display: str, **extra: str) -> dict[str, str]:
    """The environment of a user's desktop: the xcb platform on ``display``."""
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", DISPLAY=display, **extra)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def _skip_without_xcb_libraries() -> None:
    plugin = plugin_file("xcb")
    if plugin is None:
        pytest.skip("PyQt6 has no xcb platform plugin here")
    missing = missing_libraries(plugin)
    if missing:
        pytest.skip(
            f"the system lacks {', '.join(missing)} for Qt's xcb platform (scripts/setup.sh "
            f"installs them as root): sudo apt-get install -y {' '.join(XCB_PACKAGES)}"
        )


@pytest.fixture
def xvfb_display():
    """A fresh Xvfb server (1600x1000, black root); its display name (``:N``)."""
    if shutil.which("Xvfb") is None:
        pytest.skip(
            "Xvfb is not installed (apt-get install -y xvfb; scripts/setup.sh does as root)"
        )
    _skip_without_xcb_libraries()
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display; -br: black root, so the window is what is not black
    command = ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-br"]
    server = subprocess.Popen(
        [*command, "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as announced:
        number = announced.readline().strip()  # Xvfb writes it once it accepts clients
    if not number:
        server.wait(timeout=10)
        pytest.fail(f"Xvfb did not start (exit status {server.returncode})")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def _bci_app(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bci_app.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.timeout(240)
def test_window_opens_on_an_x_server_and_draws_live(xvfb_display, tmp_path, screenshot):
    env = _qt_env(xvfb_display)
    app = _bci_app("gui", "--simulate", "meg", "--exit-after", "120", env=env)
    try:
        grab = subprocess.run(
            [sys.executable, "-c", _GRABBER, str(tmp_path / "gui_xcb.png"), "150"],
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
        still_running = app.poll() is None
    finally:
        app.terminate()
        out, err = app.communicate(timeout=30)
    screenshot.keep(tmp_path / "gui_xcb.png")
    assert grab.returncode == 0, grab.stderr
    assert still_running, f"bci-app gui ended early:\n{out}\n{err}"
    assert "cannot open" not in err, err
    result = json.loads(grab.stdout)
    # the window covers most of the X screen, and the screen changes as the scope draws
    assert result["covered"] > 0.5, result
    assert result["changed"] > 0.01, result


@pytest.mark.timeout(180)
def test_broken_xcb_library_prints_the_apt_line_and_runs_in_the_terminal(tmp_path):
    if shutil.which("ldd") is None:
        pytest.skip("ldd is not available to find the libraries Qt's xcb plugin lacks")
    if plugin_file("xcb") is None:
        pytest.skip("PyQt6 has no xcb platform plugin here")
    # an empty file where the system's libxcb-cursor.so.0 should be: the plugin cannot load,
    # as on a desktop without the libxcb-cursor0 package
    broken = tmp_path / "lib"
    broken.mkdir()
    (broken / "libxcb-cursor.so.0").write_bytes(b"")
    library_path = os.pathsep.join(filter(None, [str(broken), os.environ.get("LD_LIBRARY_PATH")]))
    env = _qt_env(":0", LD_LIBRARY_PATH=library_path)
    app = _bci_app("gui", "--simulate", "meg", "--exit-after", "3", env=env)
    out, err = app.communicate(timeout=150)
    assert app.returncode == 0, f"{out}\n{err}"
    assert "Aborted" not in err and "could not be initialized" not in err
    assert "libxcb-cursor.so.0" in err
    apt_line = next(line for line in err.splitlines() if "apt-get install" in line)
    assert "libxcb-cursor0" in apt_line.split()
    assert "bci-app run --task typing --duration 3" in err
    # the terminal session ran: the shipped bundle decoded the simulated MEG typing stream
    assert "Decoding 'bci-app-sim-meg' with 'typing-meg-small'" in out
    assert "keystroke windows" in out


@pytest.mark.timeout(180)
def test_missing_display_runs_the_scope_session_in_the_terminal():
    _skip_without_xcb_libraries()
    env = _qt_env(":4242")  # no X server there
    if Path("/tmp/.X11-unix/X4242").exists():
        pytest.skip("an X server listens on :4242")
    app = _bci_app("gui", "--simulate", "eeg", "--exit-after", "2", env=env)
    out, err = app.communicate(timeout=150)
    assert app.returncode == 0, f"{out}\n{err}"
    assert "could not connect to display" in err
    assert "apt-get" not in err  # nothing to install: the display is what is missing
    # the EEG simulator has no shipped decoder: its scope session, preprocessing and windows
    assert "bci-app run --no-decoder --duration 2 on the built-in EEG, typing simulator" in err
    assert "Preprocessing 64 channels" in out
    assert "window key:" in out
