# The focal-point gateway as a container image, installed from this repository's own
# files. docker-compose.yml runs the three-country demo federation with it; on its own:
#
#   docker build -t fpg-gateway .
#   docker run --rm -it -v fpg:/data fpg-gateway init /data/gateway --id xx-yy
#   docker run -it -v fpg:/data fpg-gateway    # gateway run --config /data/gateway/gateway.toml
#
# (-it: both prompt for the key file's passphrase unless the configuration names a
# passphrase file or variable.)
# A gateway serves plain HTTP and unauthenticated metrics on loopback only: to be reached
# from outside its container it needs [server] tls_cert_file/tls_key_file and
# [metrics] token_file, and a host of 0.0.0.0 (see config/gateway.example.toml, which
# the image carries as /usr/local/share/fpg/gateway.example.toml).
#
# Volumes: everything lives under /data and belongs to uid 10001 (user fpg). A named
# volume takes that ownership from the image by itself; a bind mount does not, so give
# the host directory to that uid first:  mkdir data && sudo chown 10001:10001 data
# (or run with --user "$(id -u):$(id -g)" and a directory you own).
#
# The base image is pinned to one Python release on one Debian release. The machines
# this repository is built and checked on cannot reach Docker Hub, so no digest is
# recorded here: where you can, pin it too (docker buildx imagetools inspect
# python:3.11.14-slim-bookworm) as FROM python:3.11.14-slim-bookworm@sha256:...
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` needs (.dockerignore keeps the rest out of the context). The
# officers' web client is built by `make web` (Node.js, npm) into gateway/web/static/,
# which this copies with the package: run it before `docker build`, or /app/ answers
# 404 not_found in the image.
COPY pyproject.toml README.md constraints.txt /src/
COPY gateway /src/gateway
RUN pip install -c /src/constraints.txt /src && rm -rf /src

COPY docker/healthcheck.py /usr/local/bin/fpg-healthcheck
# `gateway init` writes a configuration that points here for every key's explanation.
COPY config/gateway.example.toml /usr/local/share/fpg/gateway.example.toml

# Never root: keys, databases and the admin socket belong to this user, under /data.
# /targets is where docker-compose.yml's setup writes Prometheus's targets (a named
# volume, which takes this directory's owner).
RUN useradd --system --user-group --uid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin fpg \
    && mkdir /data /targets && chown fpg:fpg /data /targets
USER fpg
WORKDIR /data
VOLUME ["/data"]

# The defaults of `gateway init` ([server] port) and of [metrics] port; the demo's
# configurations use 8441-8443 and 9464-9466.
EXPOSE 8443 9464

# FPG_CONFIG names the configuration the health check reads (host, port, TLS); keep it
# equal to the --config the container runs with.
ENV FPG_CONFIG=/data/gateway/gateway.toml
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/fpg-healthcheck"]

ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/data/gateway/gateway.toml"]
