# runner in a container, for the Kubernetes Job that `runner sweep --emit k8s --image IMAGE`
# writes (its pods run `runner sweep ... --shard i/n` in /work, a volume holding the project).
#
#   docker build -t runner:cpu .                          # CPU: libtorch's CPU libraries (~0.5 GB)
#   docker build -t runner:cuda --build-arg VARIANT=cuda .  # CUDA: PyTorch 2.11.0's CUDA libtorch
#
# Both build runner exactly as scripts/env.sh does on a workstation (libtorch 2.11.0 cut out of
# the torch wheel pip downloads), in release mode. The CUDA image runs the same binary against
# the CUDA build of the same libtorch, whose backend runner loads at start (src/sys/cuda.rs);
# the GPU driver comes from the host (NVIDIA container toolkit).
ARG VARIANT=cpu

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash -c 'source scripts/env.sh && runner_setup_libtorch && cargo build --release --locked --bin runner'

FROM debian:bookworm-slim AS runtime-cpu
# At the path the binary's run path names, so it needs no LD_LIBRARY_PATH.
COPY --from=build /root/.cache/runner/libtorch-2.11.0-cpu /root/.cache/runner/libtorch-2.11.0-cpu

FROM debian:bookworm-slim AS runtime-cuda
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/torch && /opt/torch/bin/pip install --no-cache-dir torch==2.11.0
ENV LD_LIBRARY_PATH=/opt/torch/lib/python3.11/site-packages/torch/lib

FROM runtime-${VARIANT}
COPY --from=build /src/target/release/runner /usr/local/bin/runner
WORKDIR /work
ENTRYPOINT ["runner"]
