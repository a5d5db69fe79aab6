"""The policy lab: retraining policies and the replay engine that compares them on an arrival trace."""
