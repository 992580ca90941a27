"""Home: the story of residual learning in eight steps, each a page."""

import streamlit as st

from resnet_viz.app import cifar_download, tasks

st.title("ResNet Lab")
st.markdown(
    "#### Why can a 56-layer network train *worse* than a 20-layer one, and how do skip connections fix it?\n"
    "Here you build the networks of He et al. (2015), train them on CIFAR-10 on your own machine, "
    "and look inside them while they learn."
)
cifar_download.offer("home")  # when the official CIFAR-10 is not on this server
tasks.published_offer()  # trained nets to look inside before training any
STEPS = [
    ("1. Degradation", "app_pages/compare.py", ":material/trending_down:",
     "A deeper **plain** net ends with a *higher training error* than a shallower one: not overfitting, "
     "but an optimization failure. See the project's own CIFAR-10 run, then run the four networks yourself."),
    ("2. The residual idea", "app_pages/build.py", ":material/alt_route:",
     "Let each block learn a change F(x) and add it to its input: y = F(x) + x. If the best thing a block can "
     "do is nothing, it only has to push F(x) to zero."),
    ("3. Build", "app_pages/build.py", ":material/construction:",
     "Pick depth (6n+2), shortcut type (none, A, B, C), block type and width; see the architecture, "
     "parameters and FLOPs of every block."),
    ("4. Train", "app_pages/train.py", ":material/model_training:",
     "Train in the background with live loss and error curves; pause, stop, resume; reloading the page "
     "does not stop it."),
    ("5. Compare", "app_pages/compare.py", ":material/compare_arrows:",
     "Overlay runs as in the paper's Fig. 6: training error solid, test error dashed."),
    ("6. Look inside", "app_pages/inspect.py", ":material/visibility:",
     "Feature maps of every block, activation and gradient norms against depth for a plain and a residual "
     "net, and the trainer's per-block records over time."),
    ("7. Why it works", "app_pages/experiments.py", ":material/science:",
     "Delete blocks (a ResNet degrades gently, a plain net collapses), walk the loss landscape, follow the "
     "gradient through a deep net at initialization, and see how much each branch adds to its skip."),
    ("8. Explain", "app_pages/explain.py", ":material/lightbulb:",
     "Saliency maps for your own images, two models side by side, and a sanity check that the map is "
     "about the model; ImageNet ResNets for photos."),
]
cols = st.columns(4)
for i, (title, page, icon, text) in enumerate(STEPS):
    with cols[i % 4].container(border=True, height=270):
        st.page_link(page, label=title, icon=icon)
        st.markdown(text)
st.caption("Start with step 1 if you are new to ResNets; step 3 if you want to build your own. "
           "The sidebar says which data set and device are in use.")
