// Generalised winding number of a triangle soup at query points, framework-free, called through ctypes.
//
// Legend: V vertices, F triangles, Q queries.
// w(q) = sum over triangles of the solid angle they subtend at q, divided by 4 pi (Jacobson et al.
// 2013, "Robust Inside-Outside Segmentation using Generalized Winding Numbers"). One triangle's
// solid angle is exact by the Van Oosterom-Strackee formula
//     tan(omega / 2) = a.(b x c) / (|a||b||c| + (a.b)|c| + (b.c)|a| + (c.a)|b|),  a, b, c = corners - q,
// evaluated with atan2, so it is finite everywhere; a triangle whose plane holds q (det = 0, which
// includes zero-area triangles and q on the triangle) counts 0, the mean of its two sides, so a
// query exactly on a flat part of a closed surface gets w = 1/2.
//
// Fast mode (beta > 0): the hierarchical approximation of Barill et al. 2018 ("Fast Winding Numbers
// for Soups and Clouds"). A BVH over the triangles (median split of centroids on the widest axis,
// leaves of <= 8) stores per node the area-weighted centroid p, the summed area vector
// N = sum 1/2 (b - a) x (c - a), the radius r = max |corner - p|, and the two next moments of the
// area vectors about p (M = sum n (c - p)^T and C = sum n (x) integral of (x - p)(x - p)^T / area).
// A node whose p is farther than beta * r from q contributes its far-field Taylor expansion in
// y = p - q: the dipole term N.y / (4 pi |y|^3), then (order >= 2) the gradient term with M, then
// (order >= 3) the Hessian term with C, as the paper does. Each term shrinks the node's error by
// another factor of r / |y| < 1 / beta. Nearer nodes recurse; leaves sum exact solid angles.
// Exact mode (beta == 0) sums every triangle.
// Queries run in parallel (OpenMP).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include <omp.h>

namespace {

constexpr int kLeafSize = 8;
constexpr double kInv4Pi = 0.07957747154594767;  // 1 / (4 pi)
constexpr double kInv2Pi = 0.15915494309189535;  // 1 / (2 pi)

// Solid angle of triangle (a, b, c) at q, divided by 4 pi.
inline double triangle_winding(const double* a, const double* b, const double* c, const double* q) {
  const double ax = a[0] - q[0], ay = a[1] - q[1], az = a[2] - q[2];
  const double bx = b[0] - q[0], by = b[1] - q[1], bz = b[2] - q[2];
  const double cx = c[0] - q[0], cy = c[1] - q[1], cz = c[2] - q[2];
  const double la = std::sqrt(ax * ax + ay * ay + az * az);
  const double lb = std::sqrt(bx * bx + by * by + bz * bz);
  const double lc = std::sqrt(cx * cx + cy * cy + cz * cz);
  const double det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx);
  const double ab = ax * bx + ay * by + az * bz, bc = bx * cx + by * cy + bz * cz, ca = cx * ax + cy * ay + cz * az;
  const double denom = la * lb * lc + ab * lc + bc * la + ca * lb;
  if (det == 0.0) return 0.0;  // atan2(+-0, denom < 0) would be +-pi on the face, by the sign of a zero
  return std::atan2(det, denom) * kInv2Pi;  // omega = 2 atan2(...), w = omega / (4 pi)
}

struct Node {
  double p[3];    // area-weighted centroid (plain centroid mean when the node has no area)
  double n[3];    // summed area vector
  double r;       // max distance from p to the node's corners
  double m[9];    // m[3i + j] = sum over triangles of n_i (c - p)_j (n area vector, c centroid)
  double c[18];   // c[6i + jk] = sum of n_i * (second moment about p)_jk, jk in xx, xy, xz, yy, yz, zz
  int64_t start;  // first triangle (in BVH order) of a leaf
  int64_t count;  // triangles of a leaf; 0 for an inner node
  int64_t right;  // inner node: index of the right child (the left child is the next node)
};

struct Tree {
  std::vector<double> tri;  // (F, 9) corners in BVH order
  std::vector<Node> nodes;  // depth-first, left child first
};

class Builder {
 public:
  Builder(const double* v, const int64_t* f, int64_t nf) : v_(v), f_(f), order_(nf), centroid_(3 * nf), area_(4 * nf) {
    std::iota(order_.begin(), order_.end(), int64_t{0});
    for (int64_t t = 0; t < nf; ++t) {
      const double* a = v_ + 3 * f_[3 * t];
      const double* b = v_ + 3 * f_[3 * t + 1];
      const double* c = v_ + 3 * f_[3 * t + 2];
      const double e1[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
      const double e2[3] = {c[0] - a[0], c[1] - a[1], c[2] - a[2]};
      const double nx = 0.5 * (e1[1] * e2[2] - e1[2] * e2[1]);
      const double ny = 0.5 * (e1[2] * e2[0] - e1[0] * e2[2]);
      const double nz = 0.5 * (e1[0] * e2[1] - e1[1] * e2[0]);
      for (int k = 0; k < 3; ++k) centroid_[3 * t + k] = (a[k] + b[k] + c[k]) / 3.0;
      area_[4 * t] = nx;
      area_[4 * t + 1] = ny;
      area_[4 * t + 2] = nz;
      area_[4 * t + 3] = std::sqrt(nx * nx + ny * ny + nz * nz);
    }
  }

  Tree build() {
    Tree tree;
    const int64_t nf = static_cast<int64_t>(order_.size());
    tree.nodes.reserve(2 * (nf / kLeafSize + 1));
    split(tree, 0, nf);
    tree.tri.resize(9 * nf);
    for (int64_t i = 0; i < nf; ++i) {
      for (int j = 0; j < 3; ++j) {
        const double* corner = v_ + 3 * f_[3 * order_[i] + j];
        for (int k = 0; k < 3; ++k) tree.tri[9 * i + 3 * j + k] = corner[k];
      }
    }
    return tree;
  }

 private:
  // Build the node for order_[lo, hi) and its subtree; returns its index.
  int64_t split(Tree& tree, int64_t lo, int64_t hi) {
    const int64_t id = static_cast<int64_t>(tree.nodes.size());
    tree.nodes.push_back(summarise(lo, hi));
    if (hi - lo <= kLeafSize) {
      tree.nodes[id].start = lo;
      tree.nodes[id].count = hi - lo;
      return id;
    }
    double lo_c[3] = {INFINITY, INFINITY, INFINITY}, hi_c[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int64_t i = lo; i < hi; ++i) {
      for (int k = 0; k < 3; ++k) {
        lo_c[k] = std::min(lo_c[k], centroid_[3 * order_[i] + k]);
        hi_c[k] = std::max(hi_c[k], centroid_[3 * order_[i] + k]);
      }
    }
    int axis = 0;
    for (int k = 1; k < 3; ++k) {
      if (hi_c[k] - lo_c[k] > hi_c[axis] - lo_c[axis]) axis = k;
    }
    const int64_t mid = lo + (hi - lo) / 2;
    std::nth_element(order_.begin() + lo, order_.begin() + mid, order_.begin() + hi,
                     [&](int64_t s, int64_t t) { return centroid_[3 * s + axis] < centroid_[3 * t + axis]; });
    split(tree, lo, mid);
    const int64_t right = split(tree, mid, hi);
    tree.nodes[id].right = right;
    return id;
  }

  Node summarise(int64_t lo, int64_t hi) const {
    Node node{};
    double total = 0.0, weighted[3] = {0, 0, 0}, plain[3] = {0, 0, 0};
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t t = order_[i];
      const double area = area_[4 * t + 3];
      total += area;
      for (int k = 0; k < 3; ++k) {
        node.n[k] += area_[4 * t + k];
        weighted[k] += area * centroid_[3 * t + k];
        plain[k] += centroid_[3 * t + k];
      }
    }
    for (int k = 0; k < 3; ++k) node.p[k] = total > 0.0 ? weighted[k] / total : plain[k] / double(hi - lo);
    double r2 = 0.0;
    for (int64_t i = lo; i < hi; ++i) {
      for (int j = 0; j < 3; ++j) {
        const double* corner = v_ + 3 * f_[3 * order_[i] + j];
        const double dx = corner[0] - node.p[0], dy = corner[1] - node.p[1], dz = corner[2] - node.p[2];
        r2 = std::max(r2, dx * dx + dy * dy + dz * dz);
      }
    }
    node.r = std::sqrt(r2);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t t = order_[i];
      double d[3], s[6];
      for (int k = 0; k < 3; ++k) d[k] = centroid_[3 * t + k] - node.p[k];
      // integral of (x - p)(x - p)^T over the triangle / area = d d^T + 1/12 sum_corners e e^T, e = corner - centroid
      s[0] = d[0] * d[0], s[1] = d[0] * d[1], s[2] = d[0] * d[2], s[3] = d[1] * d[1], s[4] = d[1] * d[2], s[5] = d[2] * d[2];
      for (int j = 0; j < 3; ++j) {
        const double* corner = v_ + 3 * f_[3 * t + j];
        double e[3];
        for (int k = 0; k < 3; ++k) e[k] = corner[k] - centroid_[3 * t + k];
        s[0] += e[0] * e[0] / 12, s[1] += e[0] * e[1] / 12, s[2] += e[0] * e[2] / 12;
        s[3] += e[1] * e[1] / 12, s[4] += e[1] * e[2] / 12, s[5] += e[2] * e[2] / 12;
      }
      for (int a = 0; a < 3; ++a) {
        const double n = area_[4 * t + a];
        for (int k = 0; k < 3; ++k) node.m[3 * a + k] += n * d[k];
        for (int k = 0; k < 6; ++k) node.c[6 * a + k] += n * s[k];
      }
    }
    return node;
  }

  const double* v_;
  const int64_t* f_;
  std::vector<int64_t> order_;
  std::vector<double> centroid_;  // (F, 3)
  std::vector<double> area_;      // (F, 4): area vector, its length
};

// The far-field expansion of a node at y = p - q, up to `order` terms (1: dipole; 2: + gradient; 3: + Hessian).
inline double far_field(const Node& node, const double y[3], double d2, int order) {
  const double d = std::sqrt(d2), inv3 = 1.0 / (d2 * d);
  double w = (node.n[0] * y[0] + node.n[1] * y[1] + node.n[2] * y[2]) * inv3;
  if (order >= 2) {
    const double* m = node.m;
    const double my[3] = {m[0] * y[0] + m[1] * y[1] + m[2] * y[2], m[3] * y[0] + m[4] * y[1] + m[5] * y[2],
                          m[6] * y[0] + m[7] * y[1] + m[8] * y[2]};
    w += (m[0] + m[4] + m[8]) * inv3 - 3.0 * (y[0] * my[0] + y[1] * my[1] + y[2] * my[2]) * inv3 / d2;
  }
  if (order >= 3) {
    // 1/2 H:C with H_ijk = -3 (delta_ij y_k + delta_ik y_j + delta_jk y_i) / d^5 + 15 y_i y_j y_k / d^7
    double trace_y = 0.0, diag = 0.0, cubic = 0.0;
    for (int i = 0; i < 3; ++i) {
      const double* s = node.c + 6 * i;  // s_i = sum n_i * S, symmetric 3x3
      const double sy[3] = {s[0] * y[0] + s[1] * y[1] + s[2] * y[2], s[1] * y[0] + s[3] * y[1] + s[4] * y[2],
                            s[2] * y[0] + s[4] * y[1] + s[5] * y[2]};
      diag += sy[i];                            // sum_k C_iik y_k
      trace_y += y[i] * (s[0] + s[3] + s[5]);  // y_i tr(C_i..)
      cubic += y[i] * (y[0] * sy[0] + y[1] * sy[1] + y[2] * sy[2]);
    }
    w += 0.5 * (-3.0 * (2.0 * diag + trace_y) * inv3 / d2 + 15.0 * cubic * inv3 / (d2 * d2));
  }
  return w * kInv4Pi;
}

double fast_winding(const Tree& tree, const double* q, double beta, int order) {
  double w = 0.0;
  int64_t stack[128];  // depth of a median-split tree is ~log2(F / 8); 128 is never reached
  int top = 0;
  stack[top++] = 0;
  const double beta2 = beta * beta;
  while (top > 0) {
    const Node& node = tree.nodes[stack[--top]];
    const double dx = node.p[0] - q[0], dy = node.p[1] - q[1], dz = node.p[2] - q[2];
    const double d2 = dx * dx + dy * dy + dz * dz;
    if (d2 > beta2 * node.r * node.r) {
      const double y[3] = {dx, dy, dz};
      w += far_field(node, y, d2, order);
    } else if (node.count > 0) {
      const double* t = tree.tri.data() + 9 * node.start;
      for (int64_t i = 0; i < node.count; ++i, t += 9) w += triangle_winding(t, t + 3, t + 6, q);
    } else {
      const int64_t self = &node - tree.nodes.data();
      stack[top++] = node.right;
      stack[top++] = self + 1;
    }
  }
  return w;
}

}  // namespace

extern "C" {

// Winding numbers of the F triangles (vertices (V, 3) float64, faces (F, 3) int64) at Q queries
// (Q, 3) float64, written to out (Q,) float64. beta == 0: exact sum over every triangle; beta > 0:
// Barill et al.'s approximation with admissibility |q - p| > beta * r (beta >= 1 keeps every
// approximated node's bounding sphere away from q) and `order` (1..3) far-field terms.
// threads <= 0: OpenMP's default.
// Returns 0, or -1 when a face index is outside [0, V), -2 for a negative beta, -3 for order outside 1..3.
int pg_winding(const double* vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
               const double* queries, int64_t num_queries, double beta, int order, int threads, double* out) {
  if (beta < 0.0) return -2;
  if (order < 1 || order > 3) return -3;
  for (int64_t i = 0; i < 3 * num_faces; ++i) {
    if (faces[i] < 0 || faces[i] >= num_vertices) return -1;
  }
  const int nthreads = threads > 0 ? threads : omp_get_max_threads();
  if (beta == 0.0 || num_faces <= kLeafSize) {
#pragma omp parallel for schedule(dynamic, 64) num_threads(nthreads)
    for (int64_t i = 0; i < num_queries; ++i) {
      const double* q = queries + 3 * i;
      double w = 0.0;
      for (int64_t t = 0; t < num_faces; ++t) {
        w += triangle_winding(vertices + 3 * faces[3 * t], vertices + 3 * faces[3 * t + 1],
                              vertices + 3 * faces[3 * t + 2], q);
      }
      out[i] = w;
    }
    return 0;
  }
  const Tree tree = Builder(vertices, faces, num_faces).build();
#pragma omp parallel for schedule(dynamic, 256) num_threads(nthreads)
  for (int64_t i = 0; i < num_queries; ++i) out[i] = fast_winding(tree, queries + 3 * i, beta, order);
  return 0;
}

}  // extern "C"
