"""The networks, their word vectors, and the scores and thresholds they are judged by."""
