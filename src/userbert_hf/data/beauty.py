"""Amazon Beauty (S3-Rec format): ``user item1 item2 ...`` per line, chronological, integer items."""

from __future__ import annotations

import os

from ..vocabulary import BehaviorVocabulary
from .behavior_data import DEFAULT_MAX_BEHAVIORS, BehaviorData, Events, build_behavior_data
from .readers import check_file, iter_lines
from .summary import DataFormatError, new_issues, report

def load_amazon_beauty(
    path: str | os.PathLike,
    *,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    strict: bool = False,
    verbose: bool = True,
) -> BehaviorData:
    """Load ``Beauty.txt``-style sequences: ``user item1 item2 ...`` per line, chronological, integer items.

    There is no time and no text: ``timestamps`` are ordinal positions 0, 1, 2, ... Non-integer item tokens
    are skipped (``invalid_item_id``, the rest of the line is kept); lines with a user and no items
    (``empty_history``) and repeated users (``duplicate_user``) are skipped, all with line numbers.

    Example:
        >>> data = load_amazon_beauty("../shared/data/amazon-beauty/Beauty.txt", verbose=False)  # doctest: +SKIP
    """
    path = check_file(path, "Amazon Beauty sequence file")
    issues = new_issues("amazon-beauty", path, strict, max_behaviors)
    events = Events(path=path)
    lines_used = 0
    for line_no, line in iter_lines(path):
        issues.summary.lines_read += 1
        tokens = line.split()
        if not tokens:
            issues.skip("blank_line", path, line_no, "blank line")
            continue
        issues.summary.rows_read += 1
        user = tokens[0]
        if user in events.seen_users:
            issues.skip("duplicate_user", path, line_no,
                        f"user {user!r} already has a sequence on line {events.seen_users[user]}")
            continue
        events.seen_users[user] = line_no
        position = 0
        for column, token in enumerate(tokens[1:], start=2):
            if not (token.isascii() and token.isdigit()):
                issues.skip("invalid_item_id", path, line_no,
                            f"token {column} ({token!r}) is not an integer item id", column=f"token {column}")
                continue
            events.users.append(user)
            events.items.append(token)
            events.times.append(position)
            events.locations.append(line_no)
            position += 1
        if position == 0:
            issues.skip("empty_history", path, line_no, f"user {user!r} has no items")
            del events.seen_users[user]
            continue
        lines_used += 1
    if issues.summary.rows_read == 0:
        raise DataFormatError(f"{path}: file is empty (only blank lines)", path=path, reason="empty_file")
    data = build_behavior_data(
        events, issues, source="amazon-beauty", vocabulary=vocabulary, item_text=lambda _: None,
        max_behaviors=max_behaviors, deduplicate=False, verbose=False,
    )
    data.summary.rows_used = lines_used
    report(data.summary, verbose)
    return data


