"""The policy lab: retraining policies, arrival traces, the replay engine, its measures and its report."""
