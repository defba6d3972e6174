# Two commands do all the set-up: `make demo` (the main job) and `make test`.
# Both create .venv on first use with `pip install -e .[dev]`, which takes torch and torchvision from the package
# registry as a matching pair (about 6 GB). Never mix a local CPU torch wheel with a registry torchvision.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nnunet_gen_installed

.PHONY: demo test

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -c "import torch, torchvision, nnunetv2; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nnunet-gen demo --workdir demo_output

# Two workers, one per core; --dist loadfile keeps each module's expensive fixtures in one worker.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile
