"""Colours, fonts and the small style sheet shared by the widgets, so the window looks as one."""

from __future__ import annotations

from PyQt6.QtGui import QFont, QFontDatabase

#: Status colours: background, text.
OK = ("#2e7d32", "#ffffff")
WARN = ("#f9a825", "#212121")
BAD = ("#c62828", "#ffffff")
IDLE = ("#757575", "#ffffff")

#: Trace colour of each channel type in the scope (others: OTHER_TRACE).
TYPE_COLORS = {
    "mag": (25, 80, 160),
    "grad": (84, 110, 122),
    "eeg": (33, 33, 33),
    "seeg": (106, 27, 154),
    "ecog": (106, 27, 154),
    "dbs": (106, 27, 154),
    "eog": (0, 121, 107),
    "ecg": (183, 28, 28),
    "emg": (141, 110, 99),
    "ref_meg": (120, 144, 156),
}
OTHER_TRACE = (117, 117, 117)
#: Trace colour of a bad channel (drawn beneath the others).
BAD_TRACE = (198, 198, 198)
#: Order of the channel-type groups in the scope (types not listed follow, in stream order).
TYPE_ORDER = tuple(TYPE_COLORS)

#: Marker line colour by marker kind (others: OTHER_MARKER).
MARKER_COLORS = {
    "key": (21, 101, 192),
    "sentence_start": (46, 125, 50),
    "sentence_end": (106, 27, 154),
    "gap": (230, 81, 0),
    "word": (0, 121, 107),
}
OTHER_MARKER = (97, 97, 97)

APP_STYLE = """
QDockWidget::title { padding: 4px 6px; font-weight: bold; background: #eceff1; }
QGroupBox { font-weight: bold; }
QLabel#panelTitle { font-weight: bold; color: #37474f; }
QLabel#muted { color: #616161; }
QFrame#errorBanner { background: #ffebee; border: 1px solid #c62828; border-radius: 3px; }
QLabel#errorText { color: #b71c1c; }
"""


def mono_font(point_size: int | None = None) -> QFont:
    """The system's fixed-width font (for text that must line up character by character)."""
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    if point_size is not None:
        font.setPointSize(point_size)
    return font


def badge_css(colors: tuple[str, str]) -> str:
    """Style sheet of a coloured status badge."""
    background, text = colors
    return (
        f"background: {background}; color: {text}; border-radius: 3px; padding: 2px 8px; "
        "font-weight: bold;"
    )
