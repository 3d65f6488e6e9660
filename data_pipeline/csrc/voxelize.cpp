// Exact surface voxelisation (triangle-box overlap), framework-free, called through ctypes.
//
// Legend: V vertices, F triangles, R resolution, M (voxel, triangle) overlaps.
// Vertices arrive in grid units (p + 0.5) * R: voxel (i, j, k) is the closed cube [i, i+1] x
// [j, j+1] x [k, k+1]. Candidates of a triangle are the voxels whose closed cubes meet its
// bounding box ([ceil(min) - 1, floor(max)], clamped to [0, R-1]); each is kept when the
// separating-axis test (Akenine-Moeller: 3 box axes, the triangle normal, 9 edge x axis
// directions) finds no gap. voxelize.py's numpy twin computes the same set.
// Large triangles are walked column by column along their dominant normal axis, where the
// plane crosses at most a few voxels per column, so the work follows the surface, not the box.
// Triangles run in parallel (OpenMP); each overlap is reported with its triangle and a weight
// (the triangle's area shared equally among the voxels it touches) for part votes.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <omp.h>

namespace {

struct Hits {
  std::vector<int64_t> key, face;
  std::vector<double> weight;
};

struct V3 {
  double x[3];
};

inline V3 sub(const V3& a, const V3& b) { return {{a.x[0] - b.x[0], a.x[1] - b.x[1], a.x[2] - b.x[2]}}; }
inline V3 cross(const V3& a, const V3& b) {
  return {{a.x[1] * b.x[2] - a.x[2] * b.x[1], a.x[2] * b.x[0] - a.x[0] * b.x[2], a.x[0] * b.x[1] - a.x[1] * b.x[0]}};
}
inline double dot(const V3& a, const V3& b) { return a.x[0] * b.x[0] + a.x[1] * b.x[1] + a.x[2] * b.x[2]; }

// Closed overlap of triangle (a, b, c) with the unit cube centred at c0.
bool overlaps(const V3& a, const V3& b, const V3& c, const V3& centre) {
  const double h = 0.5;
  const V3 v0 = sub(a, centre), v1 = sub(b, centre), v2 = sub(c, centre);
  for (int ax = 0; ax < 3; ++ax) {
    const double lo = std::min({v0.x[ax], v1.x[ax], v2.x[ax]}), hi = std::max({v0.x[ax], v1.x[ax], v2.x[ax]});
    if (lo > h || hi < -h) return false;
  }
  const V3 e[3] = {sub(v1, v0), sub(v2, v1), sub(v0, v2)};
  const V3 n = cross(e[0], e[1]);
  if (std::fabs(dot(n, v0)) > h * (std::fabs(n.x[0]) + std::fabs(n.x[1]) + std::fabs(n.x[2]))) return false;
  for (const V3& ed : e) {
    for (int j = 0; j < 3; ++j) {
      V3 ax{{0, 0, 0}};
      const int k1 = (j + 1) % 3, k2 = (j + 2) % 3;
      ax.x[k1] = ed.x[k2];
      ax.x[k2] = -ed.x[k1];  // ed x unit_j
      const double p0 = dot(ax, v0), p1 = dot(ax, v1), p2 = dot(ax, v2);
      const double r = h * (std::fabs(ax.x[0]) + std::fabs(ax.x[1]) + std::fabs(ax.x[2]));
      if (std::min({p0, p1, p2}) > r || std::max({p0, p1, p2}) < -r) return false;
    }
  }
  return true;
}

inline int64_t clampi(double v, int64_t r) { return std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(v), 0), r - 1); }

void voxelize_triangle(const V3& a, const V3& b, const V3& c, int64_t r, int64_t face, Hits& out) {
  int64_t lo[3], hi[3];
  for (int ax = 0; ax < 3; ++ax) {
    lo[ax] = std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(std::min({a.x[ax], b.x[ax], c.x[ax]})) - 1, 0), r - 1);
    hi[ax] = clampi(std::max({a.x[ax], b.x[ax], c.x[ax]}), r);
  }
  const V3 n = cross(sub(b, a), sub(c, a));
  const double area = 0.5 * std::sqrt(dot(n, n));
  auto emit = [&](int64_t i, int64_t j, int64_t k) {
    const V3 centre{{i + 0.5, j + 0.5, k + 0.5}};
    if (overlaps(a, b, c, centre)) {
      out.key.push_back((i * r + j) * r + k);
      out.face.push_back(face);
    }
  };
  const int64_t volume = (hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1) * (hi[2] - lo[2] + 1);
  const double an[3] = {std::fabs(n.x[0]), std::fabs(n.x[1]), std::fabs(n.x[2])};
  const int w = an[0] >= an[1] && an[0] >= an[2] ? 0 : (an[1] >= an[2] ? 1 : 2);  // dominant normal axis
  const V3* p[3] = {&a, &b, &c};
  int e = 0;
  double longest2 = -1.0;  // squared length of the longest edge, which starts at p[e]
  for (int i = 0; i < 3; ++i) {
    const V3 d = sub(*p[(i + 1) % 3], *p[i]);
    if (dot(d, d) > longest2) longest2 = dot(d, d), e = i;
  }
  if (volume > 64 && 2.0 * area <= 1e-9 * longest2) {
    // a (nearly) collinear triangle is a segment: its plane is ill-defined, so halve its longest
    // edge until the boxes are small instead of testing a box that may span the whole grid
    const V3& s = *p[e];
    const V3& t = *p[(e + 1) % 3];
    const V3& o = *p[(e + 2) % 3];
    const V3 mid{{(s.x[0] + t.x[0]) / 2, (s.x[1] + t.x[1]) / 2, (s.x[2] + t.x[2]) / 2}};
    voxelize_triangle(s, mid, o, r, face, out);
    voxelize_triangle(mid, t, o, r, face, out);
    return;
  }
  const size_t first = out.key.size();
  if (volume <= 64 || an[w] == 0.0) {
    for (int64_t i = lo[0]; i <= hi[0]; ++i)
      for (int64_t j = lo[1]; j <= hi[1]; ++j)
        for (int64_t k = lo[2]; k <= hi[2]; ++k) emit(i, j, k);
  } else {
    // walk columns along w: in column [u, u+1] x [v, v+1] the plane spans w between its values
    // at the four corners; only those voxels (within the box) can touch the triangle
    const int u = (w + 1) % 3, v = (w + 2) % 3;
    const double d = dot(n, a);
    int64_t idx[3];
    for (int64_t iu = lo[u]; iu <= hi[u]; ++iu) {
      for (int64_t iv = lo[v]; iv <= hi[v]; ++iv) {
        double wmin = INFINITY, wmax = -INFINITY;
        for (int cu = 0; cu <= 1; ++cu)
          for (int cv = 0; cv <= 1; ++cv) {
            const double pw = (d - n.x[u] * (iu + cu) - n.x[v] * (iv + cv)) / n.x[w];
            wmin = std::min(wmin, pw);
            wmax = std::max(wmax, pw);
          }
        // ceil(wmin) - 1: a triangle point exactly on a voxel's top face also touches that voxel
        const int64_t w0 = std::max<int64_t>(lo[w], (int64_t)std::ceil(wmin) - 1);
        const int64_t w1 = std::min(hi[w], clampi(wmax, r));
        for (int64_t iw = w0; iw <= w1; ++iw) {
          idx[u] = iu;
          idx[v] = iv;
          idx[w] = iw;
          emit(idx[0], idx[1], idx[2]);
        }
      }
    }
  }
  const size_t count = out.key.size() - first;
  for (size_t i = 0; i < count; ++i) out.weight.push_back(area / (double)count);
}

}  // namespace

extern "C" {

// Voxelise F triangles; returns an opaque result to read with pg_vox_count / pg_vox_copy and
// release with pg_vox_free. threads <= 0: OpenMP's default.
void* pg_vox_run(const double* grid_vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
                 int64_t resolution, int threads) {
  (void)num_vertices;
  const int nthreads = threads > 0 ? threads : omp_get_max_threads();
  std::vector<Hits> parts(nthreads);
#pragma omp parallel for schedule(dynamic, 256) num_threads(nthreads)
  for (int64_t f = 0; f < num_faces; ++f) {
    const int64_t* t = faces + 3 * f;
    const V3 a{{grid_vertices[3 * t[0]], grid_vertices[3 * t[0] + 1], grid_vertices[3 * t[0] + 2]}};
    const V3 b{{grid_vertices[3 * t[1]], grid_vertices[3 * t[1] + 1], grid_vertices[3 * t[1] + 2]}};
    const V3 c{{grid_vertices[3 * t[2]], grid_vertices[3 * t[2] + 1], grid_vertices[3 * t[2] + 2]}};
    voxelize_triangle(a, b, c, resolution, f, parts[omp_get_thread_num()]);
  }
  auto* all = new Hits();
  size_t total = 0;
  for (auto& p : parts) total += p.key.size();
  all->key.reserve(total);
  all->face.reserve(total);
  all->weight.reserve(total);
  for (auto& p : parts) {
    all->key.insert(all->key.end(), p.key.begin(), p.key.end());
    all->face.insert(all->face.end(), p.face.begin(), p.face.end());
    all->weight.insert(all->weight.end(), p.weight.begin(), p.weight.end());
  }
  return all;
}

int64_t pg_vox_count(void* handle) { return (int64_t) static_cast<Hits*>(handle)->key.size(); }

void pg_vox_copy(void* handle, int64_t* key, int64_t* face, double* weight) {
  const Hits* h = static_cast<Hits*>(handle);
  std::copy(h->key.begin(), h->key.end(), key);
  std::copy(h->face.begin(), h->face.end(), face);
  std::copy(h->weight.begin(), h->weight.end(), weight);
}

void pg_vox_free(void* handle) { delete static_cast<Hits*>(handle); }
}
