"""Methods: one small protocol (`base.Method`) and one registry (`registry.METHODS`)."""
