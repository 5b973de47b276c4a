"""The seed's layers, exactly: names, output shapes, parameter counts."""

from __future__ import annotations

from job.models import build_cnn, build_lstm

CNN_LAYERS = [  # name, output shape without the batch axis
    ("Poster", (64, 64, 3)),
    ("Conv0", (32, 32, 16)),
    ("Drop1", (32, 32, 16)),
    ("Conv1", (32, 32, 32)),
    ("Conv2", (32, 32, 32)),
    ("Drop2", (32, 32, 32)),
    ("Pool1", (16, 16, 32)),
    ("Conv3", (16, 16, 64)),
    ("Conv4", (16, 16, 64)),
    ("Drop3", (16, 16, 64)),
    ("Pool2", (8, 8, 64)),
    ("Conv5", (8, 8, 128)),
    ("Conv6", (8, 8, 128)),
    ("Drop4", (8, 8, 128)),
    ("Pool3", (4, 4, 128)),
    ("Flat", (2048,)),
    ("FC1", (1024,)),
    ("Drop5", (1024,)),
    ("FC2", (1024,)),
    ("Drop6", (1024,)),
    ("Output", (25,)),
]


def test_cnn_is_the_seeds():
    model = build_cnn(25)

    assert [(layer.name, tuple(layer.output.shape[1:])) for layer in model.layers] == CNN_LAYERS
    assert model.count_params() == 3_464_601
    rates = {layer.name: layer.rate for layer in model.layers if "Drop" in layer.name}
    assert rates == {
        "Drop1": 0.2,
        "Drop2": 0.2,
        "Drop3": 0.2,
        "Drop4": 0.2,
        "Drop5": 0.5,
        "Drop6": 0.5,
    }
    assert model.get_layer("Conv0").strides == (2, 2)
    assert model.get_layer("Output").activation.__name__ == "sigmoid"


def test_lstm_is_the_seeds():
    model = build_lstm(25, vocabulary_size=10_000, sequence_length=100)

    embedding = model.get_layer("Embedding")
    assert (embedding.input_dim, embedding.output_dim, embedding.mask_zero) == (10_000, 256, True)
    first, second = model.get_layer("BiLSTM1"), model.get_layer("BiLSTM2")
    for layer, units, sequences in ((first, 256, True), (second, 128, False)):
        lstm = layer.forward_layer
        assert (lstm.units, lstm.dropout, lstm.recurrent_dropout) == (units, 0.5, 0.2)
        assert lstm.return_sequences is sequences
    assert tuple(first.output.shape[1:]) == (100, 512)
    assert tuple(second.output.shape[1:]) == (256,)
    assert model.get_layer("Dense").units == 128
    assert model.get_layer("Drop").rate == 0.8
    assert tuple(model.output.shape[1:]) == (25,)
    assert model.count_params() == 4_303_129
