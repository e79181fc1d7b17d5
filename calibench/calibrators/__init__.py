"""Post-hoc calibrators: fitted on validation logits, applied to test, shifted and OOD logits."""
