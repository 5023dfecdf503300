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
    return describe_site(user_site(frame, {}))


def user_site(frame, known: dict):
    """``(code, offset)`` of the innermost user frame at or above ``frame``, or None: the raw
    site, cheap to take on a hot path (``describe_site`` formats it when a report needs it).
    ``offset`` is the frame's last instruction (``f_lasti``): its line is looked up only when
    read (``site_line``), as ``f_lineno`` would look it up at once (a walk of the code's line
    table, the dearest part of taking a site). ``known`` (filename -> is it the user's) is the
    caller's cache, reused across calls."""
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename
        user = known.get(filename)
        if user is None:
            user = known[filename] = is_user_file(filename)
        if user:
            return code, frame.f_lasti
        frame = frame.f_back
    return None


def site_line(site) -> int | None:
    """The line of a ``user_site``: the line of the code's instruction at its offset, as
    ``frame.f_lineno`` reads it (``PyCode_Addr2Line``)."""
    code, offset = site
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


def describe_site(site) -> str | None:
    """``file:line in function`` of a ``user_site`` (None for None)."""
    if site is None:
        return None
    code = site[0]
    return f"{code.co_filename}:{site_line(site)} in {code.co_name}"


def user_location_of_traceback(tb) -> str | None:
    """The innermost user frame of a traceback (where an exception hit the user's code)."""
    where = None
    for frame, lineno in traceback.walk_tb(tb):
        code = frame.f_code
        if is_user_file(code.co_filename):
            where = f"{code.co_filename}:{lineno} in {code.co_name}"
    return where
