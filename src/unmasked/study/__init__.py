"""`unmasked study`: objectives x seeds x ablations -> one resumable command and one report."""
