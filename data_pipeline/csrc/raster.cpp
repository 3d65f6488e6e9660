// Perspective z-buffer rasteriser for triangles, framework-free, called through ctypes (render.py).
//
// Legend: V vertices, F triangles, W x H image, T screen triangles (<= 2 F after near clipping).
// Vertices arrive in camera space (OpenCV: x right, y down, z forward). A pixel (row r, column c)
// is the square [c, c+1) x [r, r+1) of continuous image coordinates and is sampled at its centre
// (c + 0.5, r + 0.5); a camera-space point projects to u = (fx x + s y) / z + cx, v = fy y / z + cy.
//
//   1. setup (parallel over triangles): clip each triangle against the plane z = znear
//      (Sutherland-Hodgman on one plane: 0, 3 or 4 vertices -> 0, 1 or 2 triangles), project.
//   2. raster (parallel over bands of rows, so every pixel has one writer and the result does
//      not depend on the thread count): for each screen triangle overlapping the band, test the
//      pixel centres in its bounding box with three edge functions. Ties on an edge go to the
//      triangle for which it is a top or left edge (the D3D/OpenGL rule), so two triangles that
//      share an edge never both cover, and never both miss, a centre lying on it. Each edge
//      function is evaluated from the edge's vertices in one canonical order and then negated as
//      needed, so the two triangles sharing an edge compute exactly opposite values.
//   3. depth: 1/z is affine in screen space, so barycentrics on screen interpolate 1/z exactly
//      (perspective-correct) and depth = camera-space z of the surface under the pixel centre.
//      Smaller z wins; on equal z the lower triangle id wins (deterministic).
//
// Outputs: depth (H, W) float32, +inf where empty; tri (H, W) int32 triangle id, -1 where empty.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <omp.h>

// No fused multiply-add contraction: the compiler could fuse the two products of an edge function
// differently at different call sites, and the two triangles sharing an edge would then disagree
// on a centre lying exactly on it (a pixel left uncovered by both).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace {

// An edge function e(p) = sign * (dx (py - ay) - dy (px - ax)) with (a, b) in canonical order.
struct Edge {
  double ax, ay, dx, dy, sign;
  bool top_left;  // a centre exactly on the edge (e == 0) is inside
  inline double at(double px, double py) const { return sign * (dx * (py - ay) - dy * (px - ax)); }
  inline bool inside(double e) const { return e > 0 || (e == 0 && top_left); }
};

struct ScreenTri {
  double x[3], y[3], inv_z[3];  // pixel coordinates and 1/z of the (clipped) corners
  Edge e[3];                    // e[k]: the edge opposite corner k
  double area2;                 // twice the signed area, > 0 after orientation
  int32_t id;                   // the input triangle it came from
  int32_t x0, x1, y0, y1;       // pixel bounding box (inclusive), clamped to the image
  bool valid;
};

struct P3 {
  double x, y, z;
};

inline P3 lerp(const P3& a, const P3& b, double t) {
  return {a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t, a.z + (b.z - a.z) * t};
}

// Edge a->b of a triangle with area2 > 0 (clockwise on screen, y down): e > 0 on its inner side.
// The coefficients come from (a, b) in lexicographic order, so both triangles sharing an edge
// evaluate bit-identical magnitudes with opposite signs. Top or left edge: the inside lies below a
// top edge (it runs towards +x with dy == 0) and right of a left edge (it runs up, dy < 0).
inline Edge make_edge(double ax, double ay, double bx, double by) {
  Edge e;
  const double dy = by - ay, dx = bx - ax;
  e.top_left = dy < 0 || (dy == 0 && dx > 0);
  const bool swap = (bx < ax) || (bx == ax && by < ay);
  if (swap) {
    std::swap(ax, bx);
    std::swap(ay, by);
  }
  e.ax = ax;
  e.ay = ay;
  e.dx = bx - ax;
  e.dy = by - ay;
  e.sign = swap ? -1.0 : 1.0;
  return e;
}

void make_screen_tri(const P3* p, int32_t id, double fx, double fy, double cx, double cy, double skew, int w,
                     int h, ScreenTri& out) {
  out.valid = false;
  out.id = id;
  for (int k = 0; k < 3; ++k) {
    const double iz = 1.0 / p[k].z;
    out.x[k] = (fx * p[k].x + skew * p[k].y) * iz + cx;
    out.y[k] = fy * p[k].y * iz + cy;
    out.inv_z[k] = iz;
    if (!std::isfinite(out.x[k]) || !std::isfinite(out.y[k])) return;
  }
  double a2 = (out.x[1] - out.x[0]) * (out.y[2] - out.y[0]) - (out.y[1] - out.y[0]) * (out.x[2] - out.x[0]);
  if (!(a2 != 0)) return;  // edge-on (or NaN): covers no pixel centre
  if (a2 < 0) {
    std::swap(out.x[1], out.x[2]);
    std::swap(out.y[1], out.y[2]);
    std::swap(out.inv_z[1], out.inv_z[2]);
    a2 = -a2;
  }
  out.area2 = a2;
  for (int k = 0; k < 3; ++k) out.e[k] = make_edge(out.x[(k + 1) % 3], out.y[(k + 1) % 3], out.x[(k + 2) % 3], out.y[(k + 2) % 3]);
  const double lo_x = std::min({out.x[0], out.x[1], out.x[2]}), hi_x = std::max({out.x[0], out.x[1], out.x[2]});
  const double lo_y = std::min({out.y[0], out.y[1], out.y[2]}), hi_y = std::max({out.y[0], out.y[1], out.y[2]});
  // pixel c is sampled at c + 0.5: candidates c in [ceil(lo - 0.5), floor(hi - 0.5)]
  const double bx0 = std::max(0.0, std::ceil(lo_x - 0.5)), bx1 = std::min(double(w - 1), std::floor(hi_x - 0.5));
  const double by0 = std::max(0.0, std::ceil(lo_y - 0.5)), by1 = std::min(double(h - 1), std::floor(hi_y - 0.5));
  if (bx0 > bx1 || by0 > by1) return;
  out.x0 = int32_t(bx0);
  out.x1 = int32_t(bx1);
  out.y0 = int32_t(by0);
  out.y1 = int32_t(by1);
  out.valid = true;
}

}  // namespace

extern "C" {

// Rasterise F triangles; returns the number of screen triangles drawn (after clipping/culling).
// verts (V, 3) float64 camera space; faces (F, 3) int64; depth (H, W) float32; tri (H, W) int32.
// threads <= 0: OpenMP's default.
int64_t pg_raster(const double* verts, int64_t n_verts, const int64_t* faces, int64_t n_faces, double fx, double fy,
                  double cx, double cy, double skew, int32_t width, int32_t height, double znear, int32_t threads,
                  float* depth, int32_t* tri) {
  const int64_t n_pix = int64_t(width) * height;
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n_pix; ++i) {
    depth[i] = inf;
    tri[i] = -1;
  }
  if (n_faces <= 0 || width <= 0 || height <= 0) return 0;
  const int n_threads = threads > 0 ? threads : omp_get_max_threads();
  std::vector<ScreenTri> st(size_t(n_faces) * 2);

#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int64_t f = 0; f < n_faces; ++f) {
    ScreenTri& s0 = st[2 * f];
    ScreenTri& s1 = st[2 * f + 1];
    s0.valid = s1.valid = false;
    P3 in[3];
    bool bad = false;
    for (int k = 0; k < 3; ++k) {
      const int64_t vi = faces[3 * f + k];
      if (vi < 0 || vi >= n_verts) {
        bad = true;
        break;
      }
      in[k] = {verts[3 * vi], verts[3 * vi + 1], verts[3 * vi + 2]};
    }
    if (bad) continue;
    // clip against z >= znear
    P3 poly[4];
    int n = 0;
    for (int k = 0; k < 3; ++k) {
      const P3& a = in[k];
      const P3& b = in[(k + 1) % 3];
      const bool a_in = a.z >= znear, b_in = b.z >= znear;
      if (a_in) poly[n++] = a;
      if (a_in != b_in) {
        P3 q = lerp(a, b, (znear - a.z) / (b.z - a.z));
        q.z = znear;  // exactly on the plane (no 1/z blow-up from rounding)
        poly[n++] = q;
      }
    }
    if (n < 3) continue;
    make_screen_tri(poly, int32_t(f), fx, fy, cx, cy, skew, width, height, s0);
    if (n == 4) {
      const P3 second[3] = {poly[0], poly[2], poly[3]};
      make_screen_tri(second, int32_t(f), fx, fy, cx, cy, skew, width, height, s1);
    }
  }

  // compact (keeps input order: ids ascending)
  std::vector<ScreenTri> tris;
  tris.reserve(st.size());
  for (const ScreenTri& s : st)
    if (s.valid) tris.push_back(s);
  st.clear();
  st.shrink_to_fit();

  const int32_t band = 8;
  const int32_t n_bands = (height + band - 1) / band;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int32_t b = 0; b < n_bands; ++b) {
    const int32_t r0 = b * band, r1 = std::min(height - 1, r0 + band - 1);
    for (const ScreenTri& s : tris) {
      if (s.y1 < r0 || s.y0 > r1) continue;
      const double inv_area = 1.0 / s.area2;
      const int32_t ya = std::max(r0, s.y0), yb = std::min(r1, s.y1);
      for (int32_t r = ya; r <= yb; ++r) {
        const double py = r + 0.5;
        for (int32_t c = s.x0; c <= s.x1; ++c) {
          const double px = c + 0.5;
          const double e0 = s.e[0].at(px, py);
          if (!s.e[0].inside(e0)) continue;
          const double e1 = s.e[1].at(px, py);
          if (!s.e[1].inside(e1)) continue;
          const double e2 = s.e[2].at(px, py);
          if (!s.e[2].inside(e2)) continue;
          const double iz = (e0 * s.inv_z[0] + e1 * s.inv_z[1] + e2 * s.inv_z[2]) * inv_area;
          if (!(iz > 0)) continue;
          const float z = float(1.0 / iz);
          const int64_t i = int64_t(r) * width + c;
          if (z < depth[i] || (z == depth[i] && s.id < tri[i])) {
            depth[i] = z;
            tri[i] = s.id;
          }
        }
      }
    }
  }
  return int64_t(tris.size());
}

}  // extern "C"
