"""Where is the user's code? Frames outside the coopsim package are the user's."""

from __future__ import annotations

import os
import traceback

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def is_user_file(filename: str) -> bool:
    if filename.startswith(os.sep) and "/." not in filename and "//" not in filename:
        return not filename.startswith(_PACKAGE_DIR)  # already normal: abspath would not change it
    return not os.path.abspath(filename).startswith(_PACKAGE_DIR)


def user_location(frame) -> str | None:
    """``file:line in function`` of the innermost user frame at or above ``frame``."""
    while frame is not None:
        code = frame.f_code
        if is_user_file(code.co_filename):
            return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
    return None


def user_location_of_traceback(tb) -> str | None:
    """The innermost user frame of a traceback (where an exception hit the user's code)."""
    where = None
    for frame, lineno in traceback.walk_tb(tb):
        code = frame.f_code
        if is_user_file(code.co_filename):
            where = f"{code.co_filename}:{lineno} in {code.co_name}"
    return where
