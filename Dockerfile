# InfiniteTalk worker: ComfyUI + kijai's WanVideoWrapper on CUDA 12.8, every component pinned.
#
#   docker build -t infinitetalk-worker .                             # models at first start
#   docker build --build-arg BAKE_MODELS=1 -t infinitetalk-worker .   # models inside (~33 GB more)
#
# Layers go from the slowest-changing to the fastest (system, torch, ComfyUI and its packs,
# the worker's packages, optional models, the project), so editing the project rebuilds seconds,
# not the 10 GB below it. No secret goes into the image: the model repositories are public, so
# neither the build nor the first start needs a Hugging Face token.

# CUDA 12.8 runtime: drivers >= 570 (RunPod hosts reporting CUDA 12.8 or newer); torch 2.9.1's
# CUDA 12.8 wheels run Ampere (sm_80/86), Ada (sm_89), Hopper (sm_90) and Blackwell (sm_100/120).
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu packages follow the release the base image pins; their exact versions are left to the
# archive, which drops superseded (security-fixed) versions.
# gcc and python3-dev: Triton compiles a small launcher at first use (SageAttention, optional).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl ffmpeg gcc git libgl1 libglib2.0-0t64 python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*

# --- ComfyUI's Python environment -------------------------------------------------------------
ARG PIP_VERSION=26.1.1
ARG TORCH_VERSION=2.9.1
ARG TORCHVISION_VERSION=0.24.1
ARG TORCHAUDIO_VERSION=2.9.1
# torch first, in its own layer: the largest download, and the one that changes least.
RUN python3 -m venv /opt/comfy-venv \
    && /opt/comfy-venv/bin/pip install "pip==${PIP_VERSION}" \
    && /opt/comfy-venv/bin/pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        "torchaudio==${TORCHAUDIO_VERSION}"

# ComfyUI and the four node packs the graphs use, each at the commit they were tested at together
# (see README, "Pinned components"). Nothing else: no manager, no unused packs.
ARG COMFYUI_COMMIT=3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce
ARG WANVIDEOWRAPPER_COMMIT=088128b224242e110d3906c6750e9a3a348a659b
ARG VIDEOHELPERSUITE_COMMIT=4ee72c065db22c9d96c2427954dc69e7b908444b
# The tested KJNodes commit is known by its abbreviated sha; fetch_commit.sh resolves and prints it.
ARG KJNODES_COMMIT=dc21a41
ARG MELBANDROFORMER_COMMIT=b40e263224778ec417114d91d8b3b39934e30de5
COPY scripts/fetch_commit.sh /build/fetch_commit.sh
RUN /build/fetch_commit.sh https://github.com/comfyanonymous/ComfyUI.git "$COMFYUI_COMMIT" /comfyui \
    && /build/fetch_commit.sh https://github.com/kijai/ComfyUI-WanVideoWrapper.git "$WANVIDEOWRAPPER_COMMIT" \
        /comfyui/custom_nodes/ComfyUI-WanVideoWrapper \
    && /build/fetch_commit.sh https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite.git "$VIDEOHELPERSUITE_COMMIT" \
        /comfyui/custom_nodes/ComfyUI-VideoHelperSuite \
    && /build/fetch_commit.sh https://github.com/kijai/ComfyUI-KJNodes.git "$KJNODES_COMMIT" \
        /comfyui/custom_nodes/ComfyUI-KJNodes \
    && /build/fetch_commit.sh https://github.com/kijai/ComfyUI-MelBandRoFormer.git "$MELBANDROFORMER_COMMIT" \
        /comfyui/custom_nodes/ComfyUI-MelBandRoFormer

# Their requirements, held to the lock: whatever a pack's requirements.txt allows, the lock's
# version is installed, and check_lock.py fails the build if anything came in unpinned.
ARG STRICT_PINS=1
COPY requirements-comfyui.txt scripts/check_lock.py /build/
# MelBandRoFormer declares its two dependencies in pyproject.toml only.
RUN /opt/comfy-venv/bin/pip install -c /build/requirements-comfyui.txt \
        -r /comfyui/requirements.txt \
        -r /comfyui/custom_nodes/ComfyUI-WanVideoWrapper/requirements.txt \
        -r /comfyui/custom_nodes/ComfyUI-VideoHelperSuite/requirements.txt \
        -r /comfyui/custom_nodes/ComfyUI-KJNodes/requirements.txt \
        rotary-embedding-torch einops sageattention \
    && /opt/comfy-venv/bin/pip freeze \
        | STRICT_PINS="$STRICT_PINS" /opt/comfy-venv/bin/python /build/check_lock.py \
            /build/requirements-comfyui.txt /comfyui/requirements.txt \
    && /opt/comfy-venv/bin/pip freeze > /opt/comfy-venv/installed.txt

# --- the worker's own environment ---------------------------------------------------------------
COPY requirements.txt /build/requirements.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install "pip==${PIP_VERSION}" \
    && /opt/venv/bin/pip install -r /build/requirements.txt
ENV PATH=/opt/venv/bin:$PATH \
    COMFY_DIR=/comfyui \
    COMFY_PYTHON=/opt/comfy-venv/bin/python \
    HF_XET_HIGH_PERFORMANCE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# --- optional: the model files inside the image (BAKE_MODELS=1) -----------------------------------
# Only what provisioning reads is copied here, so a change to the rest of the project does not
# throw away a 33 GB layer.
ARG BAKE_MODELS=0
COPY infinitetalk_worker/__init__.py infinitetalk_worker/errors.py infinitetalk_worker/settings.py \
     infinitetalk_worker/models.py infinitetalk_worker/provision.py /build/bake/infinitetalk_worker/
COPY workflows/models.json /build/bake/workflows/models.json
RUN if [ "$BAKE_MODELS" = "1" ]; then \
        PYTHONPATH=/build/bake python -m infinitetalk_worker.provision --models-dir /comfyui/models --no-comfy-config; \
    fi

# --- the project ------------------------------------------------------------------------------
WORKDIR /app
COPY handler.py entrypoint.sh /app/
COPY infinitetalk_worker /app/infinitetalk_worker
COPY workflows /app/workflows
COPY examples /app/examples

ENTRYPOINT ["/app/entrypoint.sh"]
