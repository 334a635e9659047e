"""Dialog to choose which channels the scope shows: a filterable list of check boxes."""

from __future__ import annotations

from collections.abc import Sequence

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class ChannelPicker(QDialog):
    """Pick channels by name; ``picked`` carries the chosen indices when OK is pressed.

    Parameters
    ----------
    names, types : sequence of str
        Channel names and types, in stream order.
    selected : sequence of int
        Indices checked when the dialog opens.
    """

    picked = pyqtSignal(list)

    def __init__(
        self,
        names: Sequence[str],
        types: Sequence[str],
        selected: Sequence[int],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Channels shown in the scope")
        self.resize(320, 520)
        self.filter = QLineEdit(placeholderText="Filter by name or type, e.g. MEG01 or grad")
        self.filter.textChanged.connect(self._apply_filter)
        self.list = QListWidget()
        chosen = set(selected)
        for i, (name, ch_type) in enumerate(zip(names, types)):
            item = QListWidgetItem(f"{name}  ({ch_type})")
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if i in chosen else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        check_shown = QPushButton("Check shown")
        check_shown.clicked.connect(lambda: self._set_shown(Qt.CheckState.Checked))
        uncheck_shown = QPushButton("Uncheck shown")
        uncheck_shown.clicked.connect(lambda: self._set_shown(Qt.CheckState.Unchecked))
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(check_shown)
        row.addWidget(uncheck_shown)
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.list)
        layout.addLayout(row)
        layout.addWidget(buttons)

    def selection(self) -> list[int]:
        """Indices of the checked channels, in stream order."""
        return [
            self.list.item(row).data(Qt.ItemDataRole.UserRole)
            for row in range(self.list.count())
            if self.list.item(row).checkState() == Qt.CheckState.Checked
        ]

    def accept(self) -> None:
        """Emit the selection (if any channel is checked) and close."""
        chosen = self.selection()
        if chosen:
            self.picked.emit(chosen)
        super().accept()

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def _set_shown(self, state: Qt.CheckState) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if not item.isHidden():
                item.setCheckState(state)
