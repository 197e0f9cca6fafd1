"""``python -m benchmarks.suites SUITE --out DIR ...``"""
from benchmarks.suites import main

raise SystemExit(main())
