`timescale 1ns/1ps
// repq-hw reference RTL: integer MAC / GEMM tile with zero-point handling (docs/ops/gemm_zp.md,
// docs/arith.md section 4).
//
// One activation row a[m, :] meets TN weight rows w[n0 .. n0+TN-1, :]. Per clock (in_valid) one k step:
// the TN multipliers see only raw unsigned codes (CW x CW bits), never a zero point:
//     dot[j]    += a[k] * w[j][k]        raw-code dot product, term (1)
//     rowsum    += a[k]                  term (2), shared by the lanes
//     colsum[j] += w[j][k]               term (3) (weights are constant: may be precomputed offline)
// After the last k, `finish` computes in 64 bits (the headroom condition of the spec bounds every term):
//     v[j] = dot[j] - w_zp[j]*rowsum - a_zp*colsum[j] + K*a_zp*w_zp[j] + bias[j]
//          = sum_k (a[k] - a_zp) * (w[j][k] - w_zp[j]) + bias[j]
// y[j] = v[j][31:0] and ovf[j] = 1 when v[j] is outside int32 (the reference raises OverflowError there).
// The same tile computes bmm_qk (q . k^T): w = rows of k, w_zp = k_zp in every lane, bias = 0.
module rq_gemm_tile #(
    parameter integer TN = 8,     // lanes (output channels per pass)
    parameter integer CW = 8      // code width (codes are unsigned)
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 clear,      // zero the accumulators (one clock before the first k)
    input  wire                 in_valid,
    input  wire [CW-1:0]        a,
    input  wire [TN*CW-1:0]     w,
    input  wire                 finish,     // one clock after the last k
    input  wire signed [31:0]   a_zp,
    input  wire [TN*32-1:0]     w_zp,       // signed int32 per lane
    input  wire [TN*32-1:0]     bias,       // signed int32 per lane
    input  wire [31:0]          k_len,      // K
    output reg                  out_valid,
    output reg  [TN*32-1:0]     y,          // signed int32 per lane
    output reg  [TN-1:0]        ovf
);
    reg [47:0] rowsum;
    always @(posedge clk) begin
        if (rst || clear)
            rowsum <= 48'd0;
        else if (in_valid)
            rowsum <= rowsum + {{(48-CW){1'b0}}, a};
    end
    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else     out_valid <= finish;
    end
    genvar j;
    generate
        for (j = 0; j < TN; j = j + 1) begin : lane
            reg  [47:0] dot;
            reg  [47:0] colsum;
            wire [CW-1:0] wj = w[j*CW +: CW];
            wire [2*CW-1:0] prod = a * wj;
            always @(posedge clk) begin
                if (rst || clear) begin
                    dot    <= 48'd0;
                    colsum <= 48'd0;
                end else if (in_valid) begin
                    dot    <= dot + {{(48-2*CW){1'b0}}, prod};
                    colsum <= colsum + {{(48-CW){1'b0}}, wj};
                end
            end
            reg signed [63:0] wzp, bj, azp, kk, v;
            always @(posedge clk) begin
                if (finish) begin
                    wzp = {{32{w_zp[j*32+31]}}, w_zp[j*32 +: 32]};
                    bj  = {{32{bias[j*32+31]}}, bias[j*32 +: 32]};
                    azp = {{32{a_zp[31]}}, a_zp};
                    kk  = {32'd0, k_len};
                    v   = $signed({16'd0, dot}) - wzp * $signed({16'd0, rowsum})
                          - azp * $signed({16'd0, colsum}) + kk * azp * wzp + bj;
                    y[j*32 +: 32] <= v[31:0];
                    ovf[j]        <= (v > 64'sd2147483647) || (v < -64'sd2147483648);
                end
            end
        end
    endgenerate
endmodule
