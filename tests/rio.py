"""The rio fixtures (Apache-2.0, see fixtures/rio/NOTICE) and their published ware IDs.

One place for every test that uses them (compat.md lists the IDs).
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rio"
WITH_BASE = "tar:5y6NvK6GBPQ6CcuNyJyWtSrMAJQ4LVrAcZSoCRAzMSk5o53pkTYiieWyRivfvhZwhZ"
SANS_BASE = "tar:2RLHdc3am6tMCFy56vfcHm5kWLoAtYBfiaQcq17vDm1tEzQn9CC6tcF2yzpAJvehPC"
#: rio's transmat/zip/fixtures/withbase.zip, scanned in its zip_scan_test.go.
ZIP_WITH_BASE = "zip:6c1eVnQ9NutqZSMD5gimy72u3gZMcp4mFAVbQhAkpwTvTH1CCnGgL6yvBJ6MNkWUYZ"
