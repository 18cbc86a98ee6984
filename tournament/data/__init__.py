"""QA data: ingestion of every format, variant groups, leakage-safe splits, augmentation, teacher generation.

Entry points (import from the submodules; this package imports nothing heavy on its own):
- ``tournament.data.ingest``: ``read_qa(path) -> list[QARow]``, ``read_answers(path)``,
  ``read_questions(path)``, ``DataFormatError``.
- ``tournament.data.groups``: ``group_rows(rows, GroupingRules()) -> Grouping``.
- ``tournament.data.split``: ``build_split(...)``, ``build_split_from_spec(yaml)``, ``LeakageError``.
- ``tournament.data.leakage``: ``check_leakage(train_rows, eval_rows) -> LeakageReport``.
- ``tournament.data.teacher``: ``generate_from_book(book, teacher_url, model, out, ...)``.
See docs/data.md.
"""
