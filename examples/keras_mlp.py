"""The founding document's Keras example (section 4.1), written so that it runs.

A Keras 3 model (TensorFlow backend) with Dense 128 relu, Dense 64 relu and Dense 10 softmax,
trained with adam on sparse categorical cross-entropy, on the handwritten digits that ship with
scikit-learn (8x8 pixels = 64 features, 10 classes; nothing is downloaded). It reaches about
97% validation accuracy, logged by Keras as ``val_accuracy``.

Record it as a run either way:
    lmdev run examples/keras_mlp.py            # the script as it is
    python examples/keras_mlp.py --autolog     # the script calls lmdev.autolog()

The published version assigned ``self.output = ...`` in a Model subclass, which Keras 3 refuses
(``output`` is a read-only property of Model); the last layer is ``self.classifier`` here.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")  # pixel intensities 0..16 -> 0..1
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--autolog", action="store_true", help="record the run with lmdev.autolog()")
    args = parser.parse_args()
    if args.autolog:
        import lmdev

        lmdev.autolog()

    import keras

    keras.utils.set_random_seed(0)

    class Model(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense1 = keras.layers.Dense(128, activation="relu")
            self.dense2 = keras.layers.Dense(64, activation="relu")
            self.classifier = keras.layers.Dense(10, activation="softmax")

        def call(self, inputs):
            x = self.dense1(inputs)
            x = self.dense2(x)
            return self.classifier(x)

    x_train, x_val, y_train, y_val = load_digits_split()
    model = Model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs,
                        batch_size=args.batch_size, verbose=2)
    print(f"val_accuracy {history.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
