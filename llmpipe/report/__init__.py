"""The run report: one self-contained HTML page (``llmpipe report``) built from a results tree."""
