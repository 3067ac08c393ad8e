"""Evaluation of edits and variations (plain torch): the paper's metrics and LPIPS."""
