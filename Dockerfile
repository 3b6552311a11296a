# syntax=docker/dockerfile:1
# Build: docker build -t sentinel-proxy .
# Run:   docker run --rm -p 6380:6380 sentinel-proxy \
#          --listen 0.0.0.0:6380 --master-name mymaster --sentinels s1:26379,s2:26379,s3:26379

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sentinel-proxy ./cmd/sentinel-proxy

# A static binary on distroless: no shell, no package manager, runs as nonroot.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sentinel-proxy /usr/local/bin/sentinel-proxy
USER nonroot:nonroot
EXPOSE 6380 9121
ENTRYPOINT ["/usr/local/bin/sentinel-proxy"]
