"""Word error rate for the speech tests and the OCR/ASR benchmark (a test measure, not a pipeline step)."""

from __future__ import annotations


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """(substitutions + deletions + insertions) / len(reference), by word-level edit distance."""
    prev = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        cur = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref_word != hyp_word)))
        prev = cur
    return prev[-1] / max(1, len(reference))
