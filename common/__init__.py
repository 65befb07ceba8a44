"""The ground layer: models and errors shared by every package; imports none of ours."""
