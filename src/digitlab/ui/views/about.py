"""About: what MNIST is and how a drawing becomes a digit. Static: works with no API and no internet."""

from __future__ import annotations

import streamlit as st

from digitlab.ui import charts, common

# What a good model answers for the pipeline example (a "3"): shown as an illustration.
EXAMPLE_PROBABILITIES = [0.002, 0.001, 0.012, 0.948, 0.001, 0.021, 0.001, 0.004, 0.009, 0.001]


def pipeline() -> None:
    st.subheader("From your drawing to a digit", anchor=False)
    steps = [
        (
            "pipeline_drawing.png",
            "**1 · Your drawing**  \n280×280 canvas, any pen and background colour, sent as PNG.",
        ),
        (
            "pipeline_ink.png",
            "**2 · Ink found**  \nColours become ink strength; specks are dropped, the ink is cropped.",
        ),
        (
            "pipeline_input.png",
            "**3 · MNIST-style 28×28**  \nLonger side 20 px, centred on its centre of mass.",
        ),
    ]
    cols = st.columns([1, 0.18, 1, 0.18, 1, 0.18, 1.5], gap="small")
    for i, (image, text) in enumerate(steps):
        with cols[2 * i]:
            st.image(str(common.ASSETS / image), width=150)
            st.markdown(text)
        with cols[2 * i + 1]:
            st.markdown('<div class="dl-arrow">➜</div>', unsafe_allow_html=True)
    with cols[-1]:
        st.altair_chart(charts.example_probabilities(EXAMPLE_PROBABILITIES, 3), width="stretch")
        st.markdown("**4 · A model scores each digit**  \nThe highest probability is the answer. A second check, "
                    "trained on scribbles and on real handwriting, can still doubt it, even at a high score: then "
                    "the app says it is not sure.")  # fmt: skip


def main() -> None:
    common.page_header("About digitlab", "What the models learned from, and what happens between your pen and the "
                       "answer.")  # fmt: skip
    left, right = st.columns([1, 1], gap="large")
    with left:
        st.subheader("MNIST: 70,000 handwritten digits", anchor=False)
        st.markdown(
            "The models learned from **MNIST**, the classic collection of handwritten digits written by US Census "
            "Bureau employees and high-school students: **60,000** training images and **10,000** test images, "
            "each a **28×28** grey-scale picture with the digit scaled to fit a 20×20 box and centred by its "
            "centre of mass.\n\n"
            "A fully trained model learns from the 60,000 (a quick one from a part of "
            "them: the Models page says how many), from drawings of styles MNIST rarely has (a 7 with a bar, a 9 "
            "with a hooked tail, a 1 with a long flag) and from real handwriting of other collections, and is "
            "measured on the 10,000 test digits it never saw — that is the *MNIST test accuracy* on the Models "
            "page — and on real handwriting of people it never learned from, which is closer to what you draw "
            "(*Real handwriting* there: two to three points lower). With the labelled drawings of this app's users it "
            "can learn more (Models page)."
        )
    with right:
        st.image(str(common.ASSETS / "mnist_samples.png"), caption="Four MNIST test digits of each class, as stored "
                 "(white ink on black, 28×28).", width="stretch")  # fmt: skip
    pipeline()
    st.markdown(
        "A drawing on a canvas is not an MNIST scan: it is bigger, thicker, off-centre and maybe blue on yellow. "
        "Steps 2 and 3 make it look like MNIST (same size, position, stroke width and grey levels) so a model trained "
        "on MNIST recognises it. You see the exact 28×28 image next to every prediction."
    )
    st.subheader("The models", anchor=False)
    st.markdown(
        "- **CNN** — small convolutional networks (three, averaged): they learn strokes and shapes themselves; usually the most accurate.\n"
        "- **SVM (RBF kernel)** and **SVM + PCA** — support vector machines on deskewed pixels and gradient "
        "features.\n"
        "- **Extra Trees** and **Random Forest** — many decision trees voting.\n\n"
        "The **Models** page shows each one's test accuracy, confusion matrix, speed and size; **Compare** lets "
        "all of them answer the same drawing."
    )
    st.subheader("Your drawings", anchor=False)
    st.markdown(
        "Each prediction is stored with the drawing, the 28×28 image, the model and its answer. When you answer "
        "*What did you draw?* the true digit is stored too: that is what **History** measures accuracy on, and "
        "what its CSV download contains (one row per labelled drawing, and per digit of a confirmed number: the "
        "label and 784 pixel values, like MNIST). If the database is down, predictions keep working and records are queued until it is back."
    )


main()
