"""Whether Qt can open a window here, found out before the window tries (Qt aborts the process).

The PyQt6 wheel brings Qt but not the system libraries its platform plugins link to: a fresh
Debian/Ubuntu lacks some of them (``libxcb-icccm4``, ``libxcb-keysyms1``, ``libxcb-cursor0``,
...), and then ``QApplication`` aborts with "Could not load the Qt platform plugin 'xcb' even
though it was found". :func:`probe_platform` creates a ``QApplication`` in a subprocess instead;
when it fails, :func:`missing_libraries` (``ldd`` on the plugin) names the libraries that do not
load and :class:`PlatformProblem` gives the one ``apt-get`` line that installs them.

Standard library only, so that ``scripts/setup.sh`` runs it as a script without importing Qt::

    python gui/qt_platform.py            # Debian packages still missing for the window
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Debian/Ubuntu package of each system library that Qt's xcb platform and QtGui link to.
PACKAGE_OF_LIBRARY = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
}

#: What the window needs on X11 (PyQt6 6.11, from ``ldd`` on ``libqxcb.so``): one apt line.
XCB_PACKAGES = (
    "libegl1",
    "libgl1",
    "libfontconfig1",
    "libfreetype6",
    "libdbus-1-3",
    "libglib2.0-0",
    "libx11-6",
    "libx11-xcb1",
    "libxcb1",
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-shm0",
    "libxcb-sync1",
    "libxcb-util1",
    "libxcb-xfixes0",
    "libxcb-xkb1",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
)

#: Platforms that draw into memory and need no display (tests, screenshots).
HEADLESS_PLATFORMS = ("offscreen", "minimal")

_PROBE = (
    "import sys\n"
    "from PyQt6.QtWidgets import QApplication\n"
    "app = QApplication(sys.argv[:1])\n"
    "print(app.platformName())\n"
)
# "libfoo.so.1: cannot open shared object file", "/x/libfoo.so.1: file too short", ...
_LOAD_ERROR = re.compile(
    r"([\w./+-]*lib[\w.+-]+\.so[.\d]*): (?:cannot open shared object|file too)"
)
_LDD_ERROR = re.compile(r"error while loading shared libraries: ([^:]+):")


@dataclass(frozen=True)
class PlatformProblem:
    """Why the window cannot open: the Qt platform, Qt's reason, the libraries that do not load.

    Attributes
    ----------
    platform : str
        The Qt platform plugin that failed (``"xcb"``, ``"wayland"``, ...).
    reason : str
        Qt's own words (e.g. ``could not connect to display :99``).
    missing : tuple of str
        System libraries (sonames) the plugin links to that are absent or broken.
    complete : bool
        Whether ``missing`` lists them all (``ldd`` ran), not only the first that failed.
    """

    platform: str
    reason: str
    missing: tuple[str, ...] = ()
    complete: bool = False

    @property
    def apt_command(self) -> str | None:
        """The apt line that installs the missing libraries (None when none is missing)."""
        if not self.missing:
            return None
        # every library the window needs when the list may be partial, else just the missing
        packages = list(XCB_PACKAGES) if self.platform == "xcb" and not self.complete else []
        packages += [
            PACKAGE_OF_LIBRARY[name]
            for name in self.missing
            if name in PACKAGE_OF_LIBRARY and PACKAGE_OF_LIBRARY[name] not in packages
        ]
        return "sudo apt-get install -y " + " ".join(packages) if packages else None

    def message(self) -> str:
        """What a person reads: what failed, and the command that fixes it."""
        if self.missing:
            unknown = [name for name in self.missing if name not in PACKAGE_OF_LIBRARY]
            text = (
                f"The window cannot open: Qt's '{self.platform}' platform plugin needs system "
                f"libraries that do not load here ({', '.join(self.missing)})."
            )
            if self.apt_command:
                text += f" Install them (Debian/Ubuntu):\n    {self.apt_command}"
            if unknown:
                text += f"\nFind the package of {', '.join(unknown)} with 'apt-file search NAME'."
            return text
        return (
            f"The window cannot open: Qt's '{self.platform}' platform failed ({self.reason}). "
            "Check that a display is reachable ($DISPLAY or $WAYLAND_DISPLAY; ssh -X for a "
            "remote machine) or choose another platform with QT_QPA_PLATFORM."
        )


def requested_platform(env: Mapping[str, str] | None = None) -> str:
    """The platform Qt will try first: ``QT_QPA_PLATFORM``'s first entry, else its default."""
    env = os.environ if env is None else env
    choice = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if choice:
        return choice
    if sys.platform == "darwin":
        return "cocoa"
    if sys.platform == "win32":
        return "windows"
    wayland = env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland"
    return "wayland" if wayland and not env.get("DISPLAY") else "xcb"


def needs_display(env: Mapping[str, str] | None = None) -> bool:
    """Whether Qt will open a real display (False for ``offscreen``/``minimal`` everywhere)."""
    return requested_platform(env) not in HEADLESS_PLATFORMS


def plugin_file(platform: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The platform plugin Qt loads for ``platform`` (Linux), or None when there is none."""
    env = os.environ if env is None else env
    folders = []
    if env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        folders.append(Path(env["QT_QPA_PLATFORM_PLUGIN_PATH"]))
    spec = importlib.util.find_spec("PyQt6")
    if spec is not None and spec.submodule_search_locations:
        folders += [
            Path(p) / "Qt6" / "plugins" / "platforms" for p in spec.submodule_search_locations
        ]
    for folder in folders:
        candidate = folder / f"libq{platform}.so"
        if candidate.is_file():
            return candidate
    return None


def missing_libraries(path: Path, env: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """System libraries that ``path`` links to and that do not load (``ldd``: absent or broken).

    Returns None where ``ldd`` is not available.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    done = subprocess.run(
        [ldd, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=dict(os.environ if env is None else env),
    )
    found = []
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        name = None
        if "=> not found" in line:
            name = line.split("=>")[0].strip()
        elif match := _LDD_ERROR.search(line):
            name = Path(match.group(1).strip()).name
        if name and name not in found:
            found.append(name)
    return tuple(found)


def probe_platform(
    env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> PlatformProblem | None:
    """Create a ``QApplication`` in a subprocess; return why it failed, or None when it works."""
    env = dict(os.environ if env is None else env)
    platform = requested_platform(env)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return PlatformProblem(platform, f"Qt did not start within {timeout:g} s")
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    reason = next((line for line in lines if "could not connect to display" in line), None)
    reason = reason or next((line for line in lines if "Could not load" in line), None)
    reason = reason or (lines[-1] if lines else f"exit status {done.returncode}")
    missing = list(dict.fromkeys(Path(m).name for m in _LOAD_ERROR.findall(done.stderr)))
    plugin = plugin_file(platform, env)
    listed = missing_libraries(plugin, env) if plugin is not None else None
    missing += [name for name in listed or () if name not in missing]
    return PlatformProblem(platform, reason, tuple(missing), complete=listed is not None)


def missing_packages(env: Mapping[str, str] | None = None) -> list[str]:
    """Debian packages of the libraries the xcb platform plugin lacks here (for set-up scripts)."""
    plugin = plugin_file("xcb", env)
    if plugin is None:
        return []
    names = missing_libraries(plugin, env) or ()
    return list(dict.fromkeys(PACKAGE_OF_LIBRARY[n] for n in names if n in PACKAGE_OF_LIBRARY))


if __name__ == "__main__":
    print(" ".join(missing_packages()))
