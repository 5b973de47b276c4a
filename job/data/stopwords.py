"""English stop words dropped from overviews before the TF-IDF branch counts words and
word pairs (text_features "tfidf" with stop_words), as the TF-IDF + logistic
regression baseline drops them (scripts/baseline_tfidf.py)."""

from __future__ import annotations

import keras
import tensorflow as tf

# The Glasgow Information Retrieval Group's list, as scikit-learn's ENGLISH_STOP_WORDS has it
# (scikit-learn is a test dependency only, so the job carries its own copy).
STOP_WORDS = frozenset(
    """
    a about above across after afterwards again against all almost alone along already also
    although always am among amongst amoungst amount an and another any anyhow anyone anything
    anyway anywhere are around as at back be became because become becomes becoming been before
    beforehand behind being below beside besides between beyond bill both bottom but by call can
    cannot cant co con could couldnt cry de describe detail do done down due during each eg
    eight either eleven else elsewhere empty enough etc even ever every everyone everything
    everywhere except few fifteen fifty fill find fire first five for former formerly forty
    found four from front full further get give go had has hasnt have he hence her here
    hereafter hereby herein hereupon hers herself him himself his how however hundred i ie if in
    inc indeed interest into is it its itself keep last latter latterly least less ltd made many
    may me meanwhile might mill mine more moreover most mostly move much must my myself name
    namely neither never nevertheless next nine no nobody none noone nor not nothing now nowhere
    of off often on once one only onto or other others otherwise our ours ourselves out over own
    part per perhaps please put rather re same see seem seemed seeming seems serious several she
    should show side since sincere six sixty so some somehow someone something sometime
    sometimes somewhere still such system take ten than that the their them themselves then
    thence there thereafter thereby therefore therein thereupon these they thick thin third this
    those though three through throughout thru thus to together too top toward towards twelve
    twenty two un under until up upon us very via was we well were what whatever when whence
    whenever where whereafter whereas whereby wherein whereupon wherever whether which while
    whither who whoever whole whom whose why will with within without would yet you your yours
    yourself yourselves
    """.split()
)
# TextVectorization's default standardization: lowercase, then these characters removed.
PUNCTUATION = r"""[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~']"""
STOP_PATTERN = r"\b(?:" + "|".join(sorted(STOP_WORDS)) + r")\b"


@keras.saving.register_keras_serializable(package="genre_job")
def without_stop_words(texts: tf.Tensor) -> tf.Tensor:
    """TextVectorization's default standardization, then the stop words blanked out: word
    pairs are counted over the words left, as scikit-learn counts them."""
    texts = tf.strings.regex_replace(tf.strings.lower(texts), PUNCTUATION, "")
    return tf.strings.regex_replace(texts, STOP_PATTERN, " ")
