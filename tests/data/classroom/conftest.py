"""The notebooks here are sample student submissions for tests/test_classroom.py (one correct,
one incorrect per assignment), graded by otter. They are not chapters: nbmake must not run them."""

collect_ignore_glob = ["*.ipynb", "*/*.ipynb"]
