"""The labelled corpus of runs the report's detectors are measured on (``bench/diagnosis.py``; a fast
slice in tests/core/test_report_diagnosis.py)."""
