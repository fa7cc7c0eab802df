# One image for the operator (`kubeloop run`), the model server (`kubeloop serve`) and
# the model-fetch init container (`kubeloop fetch-model`).
#   docker build -t ghcr.io/kubeloop/kubeloop:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY examples/train ./examples/train
COPY hack/image-install.sh ./hack/
RUN sh hack/image-install.sh /opt/kubeloop /src

FROM python:3.11-slim
# No compilers or build tools here: only the virtual environment built above.
RUN groupadd --gid 10001 kubeloop \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kubeloop
COPY --from=build /opt/kubeloop /opt/kubeloop
ENV PATH=/opt/kubeloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kubeloop"]
CMD ["run"]
